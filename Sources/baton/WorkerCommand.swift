import ArgumentParser
import Baton
import BatonExamples
import Foundation
import Logging
import ServiceLifecycle

/// `baton worker`: runs steps of the example agents until SIGTERM/SIGINT, then drains.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Run a worker: consume submits and steps, run them, run the sweeps. Stops gracefully on SIGTERM.")

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Step queues to consume, comma-separated (default: the queues of every registered agent).")
    var queues: String?

    @Option(help: "Steps run at once.")
    var concurrency: Int = 64

    @Option(help: "Unacknowledged step deliveries per consumer.")
    var prefetch: Int = 128

    @Option(help: "A name for this worker (default: host-pid-random).")
    var id: String?

    @Option(name: .customLong("drain-timeout"), help: "Seconds running steps get at SIGTERM before the rest are left to redelivery.")
    var drainTimeout: Double = 30

    @Option(help: "Seconds a step's lease lasts (renewed every third while it runs).")
    var lease: Double = 15

    @Option(name: .customLong("time-slice"), help: "Seconds after which a step's shouldYield turns true.")
    var timeSlice: Double = 60

    func validate() throws {
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard (1...65535).contains(prefetch) else { throw ValidationError("--prefetch must be between 1 and 65535") }
        guard lease >= 1 else { throw ValidationError("--lease must be at least 1 second") }
    }

    func run() async throws {
        var configuration = Worker.Configuration(
            amqpURL: connection.amqpURL, redisURL: connection.redisURL, workerID: id ?? Worker.defaultID())
        configuration.queues = queues?.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        configuration.concurrency = concurrency
        configuration.prefetch = UInt16(prefetch)
        configuration.drainTimeout = .milliseconds(Int64(drainTimeout * 1000))
        configuration.protocolSettings.lease = .milliseconds(Int64(lease * 1000))
        configuration.protocolSettings.timeSlice = .milliseconds(Int64(timeSlice * 1000))
        let logger = Logger(label: "baton.worker")
        let worker = Worker(configuration: configuration, registry: .examples, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: worker)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            Terminal.error("\(error)")
            throw ExitCode(2)
        }
    }
}
