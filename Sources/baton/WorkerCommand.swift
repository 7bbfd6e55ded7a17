import ArgumentParser
import Baton
import BatonExamples
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

    func validate() throws {
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
        let worker = Worker(configuration: configuration, registry: .examples, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: worker)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            Terminal.error("\(error)")
            throw ExitCode(CLIExit.configuration)
        }
    }
}
