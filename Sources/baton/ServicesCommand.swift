import ArgumentParser
import Baton
import Foundation

/// `baton services start|stop|status`: a local RabbitMQ node and Redis, without Docker or systemd.
struct ServicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "services",
        abstract: "Run a local RabbitMQ node and Redis on loopback, without Docker or systemd (demo, tests, benchmarks).",
        discussion: """
            Everything lives under one folder: --dir, else $BATON_SERVICES_DIR, else ~/.baton/services.
            RabbitMQ listens on 127.0.0.1:\(Endpoints.localAMQPPort), Redis on 127.0.0.1:\(Endpoints.localRedisPort) (AOF on).

              eval "$(baton services start)"   # starts both, exports BATON_AMQP_URL and BATON_REDIS_URL
              baton services status --json
              baton services stop              # stops only what `start` started
            """,
        subcommands: [Start.self, Stop.self, Status.self]
    )

    /// The options every `services` subcommand takes.
    struct Options: ParsableArguments {
        @Option(help: "The folder for the servers' data, logs and pids (default: $BATON_SERVICES_DIR, else ~/.baton/services).")
        var dir: String?

        @Option(
            name: .customLong("only"),
            help: "Manage only this server: rabbitmq or redis (repeatable; default: both).")
        var only: [LocalServices.Service] = []

        @Option(help: "The AMQP port of the RabbitMQ node, on 127.0.0.1.")
        var amqpPort: Int = Endpoints.localAMQPPort

        @Option(help: "The Erlang distribution port of the RabbitMQ node (used by rabbitmqctl), on 127.0.0.1.")
        var distPort: Int = 25673

        @Option(help: "The Erlang node name of the RabbitMQ node.")
        var node: String = "baton@localhost"

        @Option(help: "The port of Redis, on 127.0.0.1.")
        var redisPort: Int = Endpoints.localRedisPort

        var services: LocalServices {
            var configuration = LocalServices.Configuration()
            if let dir, !dir.isEmpty { configuration.directory = dir }
            configuration.amqpPort = amqpPort
            configuration.rabbitMQDistributionPort = distPort
            configuration.rabbitMQNodeName = node
            configuration.redisPort = redisPort
            if !only.isEmpty { configuration.services = LocalServices.Service.allCases.filter(only.contains) }
            return LocalServices(configuration: configuration)
        }
    }

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start the servers that are not running yet and print `export` lines for a shell to eval.")

        @OptionGroup var options: Options

        func run() async throws {
            let services = options.services
            let results = try await ServicesCommand.reportingErrors { try await services.start() }
            for result in results {
                if result.alreadyRunning {
                    let owner =
                        result.startedByBaton ? "started by baton, pid \(result.pid.map(String.init) ?? "?")" : "not started by baton"
                    Terminal.note("\(result.service): already running at \(result.url) (\(owner)); left as it is")
                } else {
                    Terminal.note(
                        "\(result.service): started at \(result.url) (pid \(result.pid.map(String.init) ?? "?")) "
                            + "in \(ServicesCommand.format(result.duration)); log \(result.log ?? "-")")
                }
            }
            for result in results {
                let variable = result.service == .rabbitmq ? "BATON_AMQP_URL" : "BATON_REDIS_URL"
                print("export \(variable)='\(result.url)'")
            }
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop the servers that `baton services start` started (by their recorded pids); leave others alone.")

        @OptionGroup var options: Options

        func run() async throws {
            let services = options.services
            let results = try await ServicesCommand.reportingErrors { try await services.stop() }
            for result in results {
                if result.stopped {
                    Terminal.note(
                        "\(result.service): stopped (pid \(result.pid.map(String.init) ?? "?")) in \(ServicesCommand.format(result.duration))"
                            + (result.killed ? " (killed: it did not exit in time)" : ""))
                } else {
                    Terminal.note(
                        "\(result.service): nothing to stop"
                            + (result.stillAnswering ? " (a server not started by baton answers on its port; left alone)" : ""))
                }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show what runs where.")

        @OptionGroup var options: Options

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() async throws {
            let status = await options.services.status()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(status), as: UTF8.self))
                return
            }
            for service in LocalServices.Service.allCases {
                guard let entry = status[service] else { continue }
                let owner =
                    entry.startedByBaton
                    ? "started by baton, pid \(entry.pid.map(String.init) ?? "?")" : (entry.running ? "not started by baton" : "")
                let name = service.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
                let state = (entry.running ? "running" : "stopped").padding(toLength: 8, withPad: " ", startingAt: 0)
                print("\(name)\(state)\(entry.url)\(owner.isEmpty ? "" : "  (\(owner))")")
            }
            print("dir      \(status.directory)")
        }
    }

    /// Runs `body`; a ``LocalServicesError`` is printed to stderr and becomes exit code 2 (install or configure
    /// something) or 1 (the operation failed), per DESIGN.md §7.
    static func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as LocalServicesError {
            Terminal.error(error.message)
            throw ExitCode(error.code.isConfigurationError ? 2 : 1)
        }
    }

    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let value = Double(seconds) + Double(attoseconds) / 1e18
        return value < 1 ? "\(Int((value * 1000).rounded())) ms" : String(format: "%.1f s", value)
    }
}

extension LocalServices.Service: ExpressibleByArgument {}
