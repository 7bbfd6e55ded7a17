import ArgumentParser
import Baton
import BatonHTTP
import Foundation
import Logging
import ServiceLifecycle

/// `baton serve`: the HTTP API until SIGTERM/SIGINT.
///
/// Secure by default: it listens on 127.0.0.1; a non-loopback address without tokens is refused at start.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve the HTTP API (tasks, dead letters, workers, audit, live events).",
        discussion: """
            Tokens: BATON_HTTP_TOKENS="viewer:TOKEN,operator:TOKEN" (role:TOKEN or role:name:TOKEN), or http.token_hashes \
            in the configuration (role:name:<sha256 hex>). Roles: viewer reads, operator also acts, admin is everything. \
            Without tokens only a loopback address is allowed, and every caller may act.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(
        name: [.customLong("bind"), .customLong("http")],
        help: ArgumentHelp("host:port to listen on (http.bind; default 127.0.0.1:8080).", valueName: "host:port"))
    var bind: String?

    @Flag(name: .customLong("read-only"), help: "Refuse every mutating route with 405 (http.read_only).")
    var readOnly = false

    func validate() throws {
        if let bind { _ = try parse(bind) }
    }

    func parse(_ bind: String) throws -> (host: String, port: Int) {
        do { return try BatonHTTPServer.Configuration.parseBind(bind) } catch let error as BatonError {
            throw ValidationError("--bind: " + error.message)
        }
    }

    func run() async throws {
        var overrides: [String: String] = [:]
        overrides[ConfigKeys.httpBind] = bind
        if readOnly { overrides[ConfigKeys.httpReadOnly] = "true" }
        let loaded = try await global.connection.load(overrides: overrides)
        let logger = Logger(label: "baton.serve")
        let configuration: BatonHTTPServer.Configuration
        do {
            let address = try BatonHTTPServer.Configuration.parseBind(loaded.http.bind)
            var tokens = try AccessToken.parse(hashes: loaded.http.tokenHashes)
            if let plain = ProcessInfo.processInfo.environment["BATON_HTTP_TOKENS"] { tokens += try AccessToken.parse(plain: plain) }
            var settings = BatonHTTPServer.Configuration(
                host: address.host, port: address.port, readOnly: loaded.http.readOnly, tokens: tokens)
            settings.amqpURL = loaded.amqpURL
            settings.metricsTokenDigest = try loaded.http.metricsTokenHash.map(AccessToken.parse(metricsHash:))
            configuration = settings
            try configuration.validate()
        } catch let error as BatonError {
            Terminal.error("configuration: \(error.message)")
            throw ExitCode(CLIExit.configuration)
        }
        let client: BatonClient
        do {
            // A read-only server never publishes: it does not need RabbitMQ.
            client = try await BatonClient.connect(
                amqpURL: loaded.amqpURL, redisURL: loaded.redisURL, publishing: !configuration.readOnly, settings: loaded.store,
                logger: logger)
        } catch {
            Terminal.error("\(error)")
            throw ExitCode(CLIExit.configuration)
        }
        let tokenCount = configuration.tokens.count
        let server = BatonHTTPServer(configuration: configuration, client: client, logger: logger) { port in
            Terminal.note(
                "baton serve: listening on http://\(configuration.host):\(port)"
                    + (configuration.readOnly ? " (read-only)" : "")
                    + (tokenCount == 0 ? " without tokens (loopback only)" : " with \(tokenCount) token\(tokenCount == 1 ? "" : "s")"))
        }
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
            await client.close()
        } catch {
            await client.close()
            Terminal.error("\(error)")
            throw ExitCode(CLIExit.configuration)
        }
    }
}
