import AMQPClient
import Foundation
import TestSupport
import Testing

/// Integration tests against the real RabbitMQ that `scripts/test` starts (no mocks).
@Suite("AMQP against a real broker", .enabled(if: TestServers.available), .serialized)
struct AMQPIntegrationTests {
    static func configuration(_ name: String = TestServers.uniqueName("amqp-test"), heartbeat: Duration = .seconds(30)) throws
        -> AMQPConfiguration
    {
        var configuration = try AMQPConfiguration(url: TestServers.amqpURL, connectionName: name)
        configuration.heartbeat = heartbeat
        configuration.reconnect = .exponential(initial: .milliseconds(50), max: .milliseconds(500))
        return configuration
    }

    /// A fresh quorum queue, deleted after `body`.
    static func withQueue<T: Sendable>(
        _ channel: AMQPChannel, arguments: AMQPQueueArguments = AMQPQueueArguments(type: .quorum), _ body: (String) async throws -> T
    ) async throws -> T {
        let name = TestServers.uniqueName("test.q")
        try await channel.declareQueue(name, arguments: arguments)
        do {
            let result = try await body(name)
            _ = try? await channel.deleteQueue(name)
            return result
        } catch {
            _ = try? await channel.deleteQueue(name)
            throw error
        }
    }

    static func first(_ consumer: AMQPConsumer, within timeout: Duration = .seconds(10)) async throws -> AMQPDelivery {
        try await withThrowingTaskGroup(of: AMQPDelivery?.self) { group in
            group.addTask {
                var iterator = consumer.deliveries.makeAsyncIterator()
                return await iterator.next()
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let result = try await group.next() ?? nil
            group.cancelAll()
            return try #require(result, "no delivery within \(timeout)")
        }
    }

    /// Consumers cancelled while their connection closes (a worker draining as it stops): every cancel returns. The
    /// connection thread takes queued commands in one pass; those taken with the close used to be dropped, leaving
    /// their callers suspended forever.
    @Test(.timeLimit(.minutes(1)))
    func cancelsRacingTheCloseAllReturn() async throws {
        try await AMQPConnection.withConnection(try Self.configuration()) { admin in
            let channel = try await admin.openChannel()
            try await Self.withQueue(channel) { queue in
                for _ in 0..<20 {
                    let connection = try await AMQPConnection.connect(try Self.configuration())
                    let consuming = try await connection.openChannel(prefetch: 10)
                    var consumers: [AMQPConsumer] = []
                    for _ in 0..<4 { consumers.append(try await consuming.consume(queue: queue)) }
                    let returned = await withTaskGroup(of: Bool.self) { group in
                        for consumer in consumers {
                            group.addTask {
                                try? await consumer.cancel()
                                return true
                            }
                        }
                        group.addTask {
                            await connection.close()
                            return false
                        }
                        var cancels = 0
                        for await wasCancel in group where wasCancel { cancels += 1 }
                        return cancels
                    }
                    #expect(returned == consumers.count)
                }
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func roundTripWithPropertiesHeadersAndBinaryBody() async throws {
        try await AMQPConnection.withConnection(try Self.configuration()) { connection in
            let channel = try await connection.openChannel(confirms: true, prefetch: 10)
            try await Self.withQueue(channel) { queue in
                let body: [UInt8] = [0, 1, 2, 0, 255, 13, 10, 0] + Array("end".utf8)
                let headers: AMQPTable = [
                    "task": "t-1", "seq": .int64(42), "ok": true, "ratio": .double(0.5), "raw": .bytes([0, 1, 0]),
                    "nested": .table(["a": .int32(7)]), "list": .array(["x", .int64(1)]),
                ]
                let properties = AMQPProperties(
                    contentType: "application/octet-stream", headers: headers, deliveryMode: 2, priority: 3, correlationID: "corr-1",
                    replyTo: "reply.q", expiration: "60000", messageID: "msg-1", timestamp: 1_700_000_000, type: "test",
                    appID: "baton-tests")
                try await channel.publish(AMQPMessage(exchange: "", routingKey: queue, body: body, properties: properties))
                #expect(try await channel.inspectQueue(queue).messageCount == 1)

                let consumer = try await channel.consume(queue: queue)
                let delivery = try await Self.first(consumer)
                #expect(delivery.body == body)
                #expect(delivery.routingKey == queue)
                #expect(delivery.redelivered == false)
                let got = delivery.properties
                #expect(got.contentType == "application/octet-stream")
                #expect(got.deliveryMode == 2)
                #expect(got.priority == 3)
                #expect(got.correlationID == "corr-1")
                #expect(got.replyTo == "reply.q")
                #expect(got.expiration == "60000")
                #expect(got.messageID == "msg-1")
                #expect(got.timestamp == 1_700_000_000)
                #expect(got.type == "test")
                #expect(got.appID == "baton-tests")
                let h = try #require(got.headers)
                #expect(h["task"] == "t-1")
                #expect(h["seq"]?.intValue == 42)
                #expect(h["ok"] == true)
                #expect(h["ratio"] == .double(0.5))
                #expect(h["raw"] == .bytes([0, 1, 0]))
                #expect(h["nested"] == .table(["a": .int32(7)]))
                #expect(h["list"] == .array(["x", .int64(1)]))

                try await channel.ack(delivery)
                try await consumer.cancel()
                let drained = await eventually { (try? await channel.inspectQueue(queue).messageCount) == 0 }
                #expect(drained, "the acked message is gone from the queue")
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func thousandPublishesInFlightAreAllConfirmed() async throws {
        try await AMQPConnection.withConnection(try Self.configuration()) { connection in
            let channel = try await connection.openChannel(confirms: true)
            try await Self.withQueue(channel) { queue in
                // 500 in one batch, 500 from concurrent tasks: all in flight together.
                let batch = (0..<500).map { AMQPMessage(exchange: "", routingKey: queue, body: Array("b\($0)".utf8)) }
                async let batchResults = channel.publish(batch)
                let taskFailures = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for index in 0..<500 {
                        group.addTask {
                            do {
                                try await channel.publish(AMQPMessage(exchange: "", routingKey: queue, body: Array("t\(index)".utf8)))
                                return false
                            } catch { return true }
                        }
                    }
                    return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
                }
                let results = try await batchResults
                #expect(results.count == 500)
                #expect(results.allSatisfy { $0 == nil })
                #expect(taskFailures == 0)
                #expect(try await channel.inspectQueue(queue).messageCount == 1000)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func inequivalentRedeclareClosesOnlyTheChannelWithTheServersWords() async throws {
        try await AMQPConnection.withConnection(try Self.configuration()) { connection in
            let channel = try await connection.openChannel(confirms: true)
            try await Self.withQueue(channel, arguments: AMQPQueueArguments(type: .quorum, deliveryLimit: 3)) { queue in
                let other = try await connection.openChannel()
                let error = await #expect(throws: AMQPError.self) {
                    try await other.declareQueue(queue, arguments: AMQPQueueArguments(type: .quorum, deliveryLimit: 5))
                }
                #expect(error?.code == .channelError)
                #expect(error?.serverCode == 406)
                #expect(error?.serverText?.contains("inequivalent arg") == true)
                #expect(error?.fix.contains("other arguments") == true)
                // The connection and both channels stay usable: the failed one was re-opened.
                #expect(connection.isConnected)
                #expect(connection.reconnectCount == 0)
                let info = try await other.declareQueue(queue, arguments: AMQPQueueArguments(type: .quorum, deliveryLimit: 3))
                #expect(info.name == queue)
                try await channel.publish(AMQPMessage(exchange: "", routingKey: queue, body: [1]))
                #expect(try await other.inspectQueue(queue).messageCount == 1)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func quorumArgumentsDeadLetterARejectedMessage() async throws {
        try await AMQPConnection.withConnection(try Self.configuration()) { connection in
            let channel = try await connection.openChannel(confirms: true)
            let dlx = TestServers.uniqueName("test.dlx")
            try await channel.declareExchange(dlx, type: .fanout)
            defer { Task { try? await channel.deleteExchange(dlx) } }
            try await Self.withQueue(channel) { deadQueue in
                try await channel.bindQueue(deadQueue, exchange: dlx)
                let arguments = AMQPQueueArguments(
                    type: .quorum, deliveryLimit: 3, deadLetterExchange: dlx, deadLetterStrategy: .atLeastOnce, overflow: .rejectPublish,
                    maxLength: 100)
                try await Self.withQueue(channel, arguments: arguments) { queue in
                    try await channel.publish(AMQPMessage(exchange: "", routingKey: queue, body: Array("poison".utf8)))
                    let consumer = try await channel.consume(queue: queue)
                    let delivery = try await Self.first(consumer)
                    try await channel.reject(delivery, requeue: false)
                    let deadConsumer = try await channel.consume(queue: deadQueue)
                    let dead = try await Self.first(deadConsumer)
                    #expect(dead.body == Array("poison".utf8))
                    #expect(dead.properties.headers?["x-first-death-reason"]?.stringValue == "rejected")
                    try await channel.ack(dead)
                }
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func fullQueueWithRejectPublishNacks() async throws {
        try await AMQPConnection.withConnection(try Self.configuration()) { connection in
            let channel = try await connection.openChannel(confirms: true)
            try await Self.withQueue(channel, arguments: AMQPQueueArguments(type: .quorum, overflow: .rejectPublish, maxLength: 2)) {
                queue in
                // Quorum queues enforce the limit when they are over it, so a message or two past the limit may
                // still be taken; what matters is that refused messages are nacked and confirmed ones are kept.
                var confirmed = 0
                var nacked: [AMQPError] = []
                for index in 0..<10 {
                    do {
                        try await channel.publish(AMQPMessage(exchange: "", routingKey: queue, body: [UInt8(index)]))
                        confirmed += 1
                    } catch let error as AMQPError {
                        nacked.append(error)
                    }
                }
                #expect(!nacked.isEmpty)
                #expect(nacked.allSatisfy { $0.code == .nacked && $0.fix.contains("full") })
                #expect(confirmed >= 2)
                #expect(try await channel.inspectQueue(queue).messageCount == UInt32(confirmed))
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func unroutableMandatoryPublishIsAnErrorAndRoutableOneIsNot() async throws {
        try await AMQPConnection.withConnection(try Self.configuration()) { connection in
            let channel = try await connection.openChannel(confirms: true)
            try await Self.withQueue(channel) { queue in
                let results = try await channel.publish([
                    AMQPMessage(exchange: "", routingKey: queue, body: [1], mandatory: true),
                    AMQPMessage(exchange: "amq.direct", routingKey: TestServers.uniqueName("nobody"), body: [2], mandatory: true),
                    AMQPMessage(exchange: "", routingKey: queue, body: [3], mandatory: true),
                ])
                #expect(results[0] == nil)
                #expect(results[1]?.code == .unroutable)
                #expect(results[1]?.serverCode == 312)
                #expect(results[1]?.description.contains("amq.direct") == true)
                #expect(results[2] == nil)
                #expect(try await channel.inspectQueue(queue).messageCount == 2)
            }
        }
    }

    @Test(.timeLimit(.minutes(4)))
    func brokerClosedConnectionReconnectsAndRedeliversTheUnackedMessage() async throws {
        let name = TestServers.uniqueName("amqp-test-close")
        try await AMQPConnection.withConnection(try Self.configuration(name)) { connection in
            let channel = try await connection.openChannel(confirms: true, prefetch: 5)
            try await Self.withQueue(channel) { queue in
                try await channel.publish(AMQPMessage(exchange: "", routingKey: queue, body: Array("keep me".utf8)))
                let consumer = try await channel.consume(queue: queue)
                var iterator = consumer.deliveries.makeAsyncIterator()
                let first = try #require(await iterator.next())
                #expect(first.redelivered == false)

                let closed = try await RabbitControl.closeConnections(named: name)
                #expect(closed == 1)
                let second = try #require(await iterator.next(), "the restored consumer gets the message again")
                #expect(second.body == Array("keep me".utf8))
                #expect(second.redelivered == true)
                #expect(connection.reconnectCount == 1)
                #expect(connection.isConnected)
                // The old delivery belongs to the dead connection: acking it is refused as stale, not sent.
                await #expect(throws: AMQPError.self) { try await channel.ack(first) }
                try await channel.ack(second)
                let drained = await eventually { (try? await channel.inspectQueue(queue).messageCount) == 0 }
                #expect(drained)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func busyHandlerForThreeHeartbeatsKeepsTheConnection() async throws {
        let name = TestServers.uniqueName("amqp-test-hb")
        try await AMQPConnection.withConnection(try Self.configuration(name, heartbeat: .seconds(1))) { connection in
            let channel = try await connection.openChannel(confirms: true, prefetch: 1)
            try await Self.withQueue(channel) { queue in
                try await channel.publish(AMQPMessage(exchange: "", routingKey: queue, body: [7]))
                let consumer = try await channel.consume(queue: queue)
                let delivery = try await Self.first(consumer)
                // The handler holds the delivery for 3.5 heartbeat intervals (busy on a thread of its own, so the
                // cooperative pool that parallel tests share is not blocked); heartbeats are the connection
                // thread's job, so the broker must not drop us.
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    Thread.detachNewThread {
                        usleep(3_500_000)
                        continuation.resume()
                    }
                }
                try await channel.ack(delivery)
                try await channel.publish(AMQPMessage(exchange: "", routingKey: queue, body: [8]))
                #expect(connection.reconnectCount == 0)
                #expect(connection.isConnected)
                let (_, output) = try await RabbitControl.run([
                    "list_connections", "--no-table-headers", "--silent", "client_properties", "timeout",
                ])
                let line = output.split(separator: "\n").first { $0.contains(name) }
                #expect(line?.hasSuffix("\t1") == true, "the broker agreed a 1 s heartbeat: \(line ?? "not listed")")
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func unreachableBrokerNamesTheURLWithoutThePassword() async throws {
        var configuration = try AMQPConfiguration(url: "amqp://ana:s3cret-pw@127.0.0.1:1/")
        configuration.connectTimeout = .seconds(2)
        let start = ContinuousClock.now
        let error = await #expect(throws: AMQPError.self) { _ = try await AMQPConnection.connect(configuration) }
        #expect(ContinuousClock.now - start < .seconds(3))
        let text = "\(error.map { "\($0)" } ?? "")"
        #expect(error?.code == .connectionFailed)
        #expect(text.contains("127.0.0.1:1"))
        #expect(text.contains("ana:***@"))
        #expect(!text.contains("s3cret-pw"))
        #expect(text.contains("BATON_AMQP_URL"))
    }

    @Test(.timeLimit(.minutes(1)))
    func wrongPasswordIsRefusedClearly() async throws {
        var url = try AMQPURL(TestServers.amqpURL)
        url.password = "definitely-wrong"
        let error = await #expect(throws: AMQPError.self) { _ = try await AMQPConnection.connect(AMQPConfiguration(url: url)) }
        #expect(error?.code == .accessRefused)
        #expect(error?.serverCode == 403)
        #expect(!"\(error.map { "\($0)" } ?? "")".contains("definitely-wrong"))
    }
}
