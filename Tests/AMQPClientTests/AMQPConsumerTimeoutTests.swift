import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import AMQPClient
@testable import Baton

/// The broker closing a consumer channel for `consumer_timeout` (406), on a RabbitMQ node of this suite's own:
/// the setting is global to a node, so never on the shared servers.
@Suite("AMQP: consumer_timeout closes on a sandboxed node", .serialized)
struct AMQPConsumerTimeoutTests {
    /// Milliseconds; the broker checks it every `channel_tick_interval` (500 ms here).
    static let consumerTimeout = 2_000
    static var installed: Bool { FileManager.default.isExecutableFile(atPath: "/usr/lib/rabbitmq/bin/rabbitmq-server") }

    /// `stall`: also block the connection thread for 1.5 s around each close, as a busy worker does, so the
    /// broker repeats the close on every tick before it reads the close-ok.
    @Test(
        "A consumer that holds one delivery past consumer_timeout while acking the others, across several closes: the channel is reopened, no stale ack reaches the new channel and the connection survives",
        .enabled(if: TestServers.required || installed), .timeLimit(.minutes(4)), arguments: [false, true])
    func heldDeliveriesAcrossSeveralTimeoutCloses(stall: Bool) async throws {
        let directory = FileManager.default.temporaryDirectory.path + "/" + TestServers.uniqueName("baton-amqp-timeout")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = LocalServices.Configuration(environment: ["BATON_SERVICES_DIR": directory])
        configuration.services = [.rabbitmq]
        configuration.amqpPort = try TestPorts.free()
        configuration.rabbitMQDistributionPort = try TestPorts.free()
        configuration.rabbitMQNodeName = TestServers.uniqueName("amqptimeout").replacingOccurrences(of: ".", with: "-") + "@localhost"
        configuration.startTimeout = .seconds(120)
        let services = LocalServices(configuration: configuration)
        try FileManager.default.createDirectory(atPath: services.rabbitMQPaths.base, withIntermediateDirectories: true)
        try "[{rabbit, [{consumer_timeout, \(Self.consumerTimeout)}, {channel_tick_interval, 500}]}].\n".write(
            toFile: services.rabbitMQPaths.base + "/advanced.config", atomically: true, encoding: .utf8)
        _ = try await services.start()
        let lines = LogLines()
        do {
            try await Self.run(url: configuration.amqpURL, brokerLog: services.logFile(of: .rabbitmq), stall: stall, lines: lines)
        } catch {
            print(lines.all.joined(separator: "\n"))
            _ = try? await services.stop()
            throw error
        }
        _ = try await services.stop()
    }

    static func run(url: String, brokerLog: String, stall: Bool, lines: LogLines) async throws {
        var amqp = try AMQPConfiguration(url: url, connectionName: TestServers.uniqueName("amqp-timeout"))
        amqp.reconnect = .exponential(initial: .milliseconds(50), max: .milliseconds(500))
        let logger = Logger(label: "amqp-timeout-test") { _ in CapturingLogHandler(lines: lines) }
        let connection = try await AMQPConnection.connect(amqp, logger: logger)
        let publisher = try await connection.openChannel(confirms: true)
        let queue = TestServers.uniqueName("test.timeout.q")
        try await publisher.declareQueue(queue, arguments: AMQPQueueArguments(type: .quorum))
        let total = 400
        let results = try await publisher.publish(
            (0..<total).map { AMQPMessage(exchange: "", routingKey: queue, body: Array("m-\($0)".utf8)) })
        #expect(results.allSatisfy { $0 == nil })

        let consuming = try await connection.openChannel(prefetch: 16)
        let consumer = try await consuming.consume(queue: queue)
        var acked: [String: Int] = [:]
        var heldEpochs: Set<UInt64> = []
        let holdLives = 3
        deliveries: for await batch in consumer.batches {
            for delivery in batch {
                let id = String(decoding: delivery.body, as: UTF8.self)
                if heldEpochs.count < holdLives, !heldEpochs.contains(delivery.epoch) {
                    // Hold this one past the timeout (the broker redelivers it after the close).
                    heldEpochs.insert(delivery.epoch)
                    if stall {
                        Task {
                            try? await Task.sleep(for: .milliseconds(Self.consumerTimeout - 200))
                            publisher.publish([], thenAck: [], beforeAck: { usleep(1_500_000) })
                        }
                    }
                    continue
                }
                try? await Task.sleep(for: .milliseconds(8))
                do {
                    try await consuming.ack(delivery)
                    // An ack the closing channel ignored gives a redelivery: that one is acked again.
                    #expect(acked[id] == nil || delivery.redelivered, "\(id) acked twice without a redelivery")
                    acked[id, default: 0] += 1
                } catch let error as AMQPError where error.code == .staleDelivery {
                    continue  // the broker redelivers it
                }
                if acked.count == total { break deliveries }
            }
        }
        try await consuming.cancel(consumerTag: consumer.tag)
        let info = try await publisher.inspectQueue(queue)
        _ = try? await publisher.deleteQueue(queue)
        let reconnects = connection.reconnectCount
        await connection.close()

        let log = lines.all.joined(separator: "\n")
        let broker = (try? String(contentsOfFile: brokerLog, encoding: .utf8)) ?? ""
        let timeouts = broker.components(separatedBy: "timed out waiting for delivery acknowledgement").count - 1
        #expect(timeouts >= 2, "the broker timed held deliveries out, more than once")
        #expect(!log.contains("unknown delivery tag"), "no ack of a tag the channel's current life never issued:\n\(log)")
        #expect(!broker.contains("unknown delivery tag"), "\(broker.suffix(3000))")
        #expect(!broker.contains("connection exception"), "no connection-level error:\n\(broker.suffix(3000))")
        #expect(reconnects == 0, "the connection was never closed:\n\(log)")
        #expect(acked.count == total, "every message acked")
        #expect(info.messageCount == 0, "and the broker took every ack: nothing left in the queue")
    }
}

/// Every log line of the client, for the assertions.
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

struct CapturingLogHandler: LogHandler {
    let lines: LogLines
    var logLevel: Logger.Level = .debug
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        lines.append("\(event.level) \(event.message) \(merged.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " "))")
    }
}

/// Settling one delivery twice: the broker would close the channel (406 unknown delivery tag), so the client
/// refuses the second settlement and the channel stays as it was.
@Suite("AMQP: settle a delivery once", .enabled(if: TestServers.available), .serialized)
struct AMQPSettleOnceTests {
    @Test(.timeLimit(.minutes(1)))
    func aSecondAckOfOneDeliveryIsRefusedAndTheChannelStaysOpen() async throws {
        let lines = LogLines()
        let logger = Logger(label: "amqp-settle-once-test") { _ in CapturingLogHandler(lines: lines) }
        try await AMQPConnection.withConnection(try AMQPIntegrationTests.configuration(), logger: logger) { connection in
            let channel = try await connection.openChannel(confirms: true, prefetch: 10)
            try await AMQPIntegrationTests.withQueue(channel) { queue in
                let results = try await channel.publish(
                    (0..<3).map { AMQPMessage(exchange: "", routingKey: queue, body: Array("m-\($0)".utf8)) })
                #expect(results.allSatisfy { $0 == nil })
                let consumer = try await channel.consume(queue: queue)
                var deliveries: [AMQPDelivery] = []
                for await delivery in consumer.deliveries {
                    deliveries.append(delivery)
                    if deliveries.count == 3 { break }
                }
                try await channel.ack(deliveries[0])
                let error = await #expect(throws: AMQPError.self) { try await channel.ack(deliveries[0]) }
                #expect(error?.code == .staleDelivery)
                #expect(error?.fix.contains("settle each delivery once") == true)
                // A nack and an ack-after of an already settled delivery are not sent either.
                await #expect(throws: AMQPError.self) { try await channel.nack(deliveries[0], requeue: true) }
                try await channel.ack(deliveries[1])
                channel.publish([], thenAck: [deliveries[1]])
                try await channel.ack(deliveries[2])
                try await channel.cancel(consumerTag: consumer.tag)
                // The channel was never closed by the broker, and nothing is left unacked.
                let info = try await channel.inspectQueue(queue)
                #expect(info.messageCount == 0)
                #expect(!lines.all.contains { $0.contains("closed by the broker") }, "\(lines.all)")
                #expect(connection.reconnectCount == 0)
            }
        }
    }
}
