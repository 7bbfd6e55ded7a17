import ArgumentParser
import Baton
import BatonExamples
import BatonHTTP
import Foundation
import Logging
import ServiceLifecycle

/// `baton worker`: runs steps of the example agents until SIGTERM/SIGINT, then drains.
///
/// Its settings come from the configuration (flags > `BATON_*` > the YAML file > defaults); the flags here
/// override the keys named in their help.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Run a worker: consume submits and steps, run them, run the sweeps. Stops gracefully on SIGTERM.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Step queues to consume, comma-separated (worker.queues; default: the queues of every registered agent).")
    var queues: String?

    @Option(help: "Steps run at once (worker.concurrency; default 64).")
    var concurrency: Int?

    @Option(help: "Unacknowledged step deliveries per consumer (worker.prefetch; default 128).")
    var prefetch: Int?

    @Option(help: "A name for this worker (default: host-pid-random).")
    var id: String?

    @Option(
        name: .customLong("drain-timeout"),
        help: ArgumentHelp("Time running steps get at SIGTERM, e.g. 30s (worker.drain_timeout).", valueName: "duration"))
    var drainTimeout: String?

    @Option(help: ArgumentHelp("A step's lease, renewed every third while it runs, e.g. 15s (worker.lease).", valueName: "duration"))
    var lease: String?

    @Option(
        name: .customLong("time-slice"),
        help: ArgumentHelp("After this a step's shouldYield turns true, e.g. 60s (worker.time_slice).", valueName: "duration"))
    var timeSlice: String?

    @Option(
        name: .customLong("http"),
        help: ArgumentHelp(
            "Serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9090 (port 0: any free port, printed at start). Loopback only unless --http-public.",
            valueName: "host:port"))
    var http: String?

    @Flag(name: .customLong("http-public"), help: "Allow --http on a non-loopback address (the endpoints have no authentication).")
    var httpPublic = false

    func validate() throws {
        if let http {
            guard let (host, _) = try? BatonHTTPServer.Configuration.parseBind(http) else {
                throw ValidationError("--http must be host:port, e.g. 127.0.0.1:9090 or [::1]:9090; got \"\(http)\"")
            }
            if !httpPublic && !BatonHTTPServer.Configuration.isLoopback(host) {
                throw ValidationError(
                    "--http \(http) is not a loopback address: /metrics has no authentication. Bind 127.0.0.1 or add --http-public")
            }
        }
        if let concurrency, concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if let prefetch, !(1...65535).contains(prefetch) { throw ValidationError("--prefetch must be between 1 and 65535") }
        for (flag, value) in [("--drain-timeout", drainTimeout), ("--lease", lease), ("--time-slice", timeSlice)] {
            if let value, DurationText.parse(value) == nil { throw ValidationError("\(flag) must be a duration such as 500ms, 30s or 2m") }
        }
        if let lease, let duration = DurationText.parse(lease), duration < .seconds(1) {
            throw ValidationError("--lease must be at least 1s")
        }
    }

    /// The flags given, by configuration key.
    var overrides: [String: String] {
        var values: [String: String] = [:]
        values[ConfigKeys.workerQueues] = queues
        values[ConfigKeys.workerConcurrency] = concurrency.map(String.init)
        values[ConfigKeys.workerPrefetch] = prefetch.map(String.init)
        values[ConfigKeys.workerDrainTimeout] = drainTimeout
        values[ConfigKeys.workerLease] = lease
        values[ConfigKeys.workerTimeSlice] = timeSlice
        return values
    }

    func run() async throws {
        var configuration = try await global.connection.load(overrides: overrides).worker
        if let id, !id.isEmpty { configuration.workerID = id }
        let logger = Logger(label: "baton.worker")
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let http, let (host, port) = try? BatonHTTPServer.Configuration.parseBind(http) {
            // Before the worker creates its first metric: swift-metrics is bootstrapped once per process.
            ProcessMetrics.bootstrap()
            let worker = Worker(configuration: configuration, registry: .examples, logger: logger)
            // A drain request ends the worker by itself: the group then shuts down gracefully (exit 0).
            services.append(.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup))
            services.append(
                .init(
                    service: WorkerHTTPServer(host: host, port: port, ready: { worker.isReady }, logger: logger) { bound in
                        Terminal.note("baton worker: metrics on http://\(host):\(bound)/metrics")
                    }))
        } else {
            services.append(
                .init(
                    service: Worker(configuration: configuration, registry: .examples, logger: logger),
                    successTerminationBehavior: .gracefullyShutdownGroup))
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            Terminal.error("\(error)")
            throw ExitCode(CLIExit.configuration)
        }
    }
}
