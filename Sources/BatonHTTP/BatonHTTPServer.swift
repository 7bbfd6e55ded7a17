import Baton
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// `baton serve`: the HTTP API (DESIGN.md §7) as a ``Service``, run in a `ServiceGroup` like `baton worker`.
///
/// ```swift
/// let client = try await BatonClient.connect(amqpURL: amqp, redisURL: redis, publishing: true, logger: logger)
/// let server = BatonHTTPServer(configuration: .init(host: "127.0.0.1", port: 8080), client: client, logger: logger)
/// try await ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// Stateless: every answer is read from Redis at the time of the request, so any number of servers may run.
public struct BatonHTTPServer: Service {
    /// How the server listens and whom it lets in.
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// 0 picks a free port (``BatonHTTPServer/init(configuration:client:logger:onListening:)`` reports it).
        public var port = 8080
        /// Refuse every mutating route with 405.
        public var readOnly = false
        /// The accepted bearer tokens. Empty: no authentication, allowed only on a loopback address.
        public var tokens: [AccessToken] = []
        /// SHA-256 of the token `GET /metrics` requires; nil leaves it open.
        public var metricsTokenDigest: [UInt8]?
        /// How long `POST /v1/tasks` waits for a worker's reply before answering 202 with status `submitted`.
        public var submitReplyTimeout: Duration = .seconds(5)
        /// How often an event stream looks for new events when it has none to send.
        public var eventPollInterval: Duration = .milliseconds(200)
        /// An event stream with nothing to say writes a comment this often, so a dead client is noticed.
        public var eventKeepAlive: Duration = .seconds(15)
        /// The largest request body accepted.
        public var maxBodyBytes = 1 << 20
        /// The broker's URL, for `GET /v1/queues` and the queue gauges of `/metrics` (nil: not shown).
        public var amqpURL: String?

        public init(host: String = "127.0.0.1", port: Int = 8080, readOnly: Bool = false, tokens: [AccessToken] = []) {
            self.host = host
            self.port = port
            self.readOnly = readOnly
            self.tokens = tokens
        }

        /// Parses `host:port` (`[::1]:8080` for IPv6).
        ///
        /// - Throws: a ``BatonError`` (code `configuration`) saying the expected shape.
        public static func parseBind(_ text: String) throws -> (host: String, port: Int) {
            let shape = "the bind address must be host:port, e.g. 127.0.0.1:8080 or [::1]:8080; got \"\(text)\""
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port)
            else { throw BatonError(.configuration, shape, field: ConfigKeys.httpBind) }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { throw BatonError(.configuration, shape, field: ConfigKeys.httpBind) }
            return (host, port)
        }

        /// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost).
        public static func isLoopback(_ host: String) -> Bool {
            host == "localhost" || host == "::1" || host.hasPrefix("127.")
        }

        /// Refuses a non-loopback address without tokens: anyone who can reach it could act on tasks.
        public func validate() throws {
            if tokens.isEmpty && !Self.isLoopback(host) {
                throw BatonError(
                    .configuration,
                    "refusing to listen on \(host):\(port) without API tokens: anyone who can reach it could cancel tasks and "
                        + "redrive dead letters. Set BATON_HTTP_TOKENS=\"operator:<token>\" (or http.token_hashes in "
                        + "Config/baton.yaml), or bind a loopback address such as 127.0.0.1:\(port)",
                    field: ConfigKeys.httpBind)
            }
        }
    }

    public let configuration: Configuration
    let client: BatonClient
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void

    /// - Parameters:
    ///   - client: connected with `publishing: true` unless read-only (submit, resume and redrive publish).
    ///   - onListening: called with the bound port once the server accepts connections.
    public init(
        configuration: Configuration, client: BatonClient, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.client = client
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        try configuration.validate()
        ProcessMetrics.bootstrap()
        let router = Router(context: BasicRequestContext.self)
        router.middlewares.add(ProblemMiddleware())
        APIRoutes(configuration: configuration, client: client, logger: logger).register(on: router)
        let dashboard = Dashboard.load()
        if dashboard.files.isEmpty {
            logger.warning("the dashboard's files (Baton_BatonHTTP.resources/Dashboard) are missing: `/` will answer 404")
        }
        dashboard.register(on: router)
        let onListening = self.onListening
        let application = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "baton"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        try await application.run()
    }
}
