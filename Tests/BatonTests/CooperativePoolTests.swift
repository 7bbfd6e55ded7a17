import AMQPClient
import Foundation
import RedisClient
import Synchronization
import TestSupport
import Testing

/// Blocking C calls must never run on Swift's cooperative pool (2 threads here): every connection has a
/// thread of its own. While more connections than the pool has threads sit in 5-second blocking reads,
/// unrelated 50 ms sleeps must all finish long before any of those reads returns.
@Suite("No C call on the cooperative pool", .enabled(if: TestServers.available))
struct CooperativePoolTests {
    @Test(.timeLimit(.minutes(1)))
    func blockingReadsDoNotStallUnrelatedTasks() async throws {
        let blockers = max(4, ProcessInfo.processInfo.activeProcessorCount * 2)
        var connections: [RedisConnection] = []
        for _ in 0..<blockers {
            connections.append(
                try await RedisConnection.connect(
                    configuration: try RedisConfiguration(url: TestServers.redisURL), logger: .init(label: "test")))
        }
        // AMQP connections too: their threads sit in poll(2) on the socket while their consumers wait.
        var amqp: [AMQPConnection] = []
        var consumers: [AMQPConsumer] = []
        let queue = TestServers.uniqueName("test.pool")
        for index in 0..<3 {
            let connection = try await AMQPConnection.connect(
                try AMQPConfiguration(url: TestServers.amqpURL, connectionName: "pool-\(index)"))
            let channel = try await connection.openChannel()
            if index == 0 { try await channel.declareQueue(queue, durable: false, autoDelete: true) }
            consumers.append(try await channel.consume(queue: queue))
            amqp.append(connection)
        }
        let key = TestServers.uniqueName("test:pool:empty")
        let clock = ContinuousClock()
        let start = clock.now
        let record = Recorder()

        try await withThrowingTaskGroup(of: Void.self) { group in
            for connection in connections {
                group.addTask {
                    // BLPOP on an empty list blocks inside hiredis's read for 5 s (long, so a loaded machine's
                    // scheduling delays cannot be mistaken for a blocked pool).
                    let reply = try await connection.send("BLPOP", key, 5)
                    #expect(reply.isNull)
                    let now = clock.now - start
                    record.firstRead.withLock { $0 = min($0 ?? now, now) }
                }
            }
            try await Task.sleep(for: .milliseconds(100))  // the reads are in flight
            for _ in 0..<20 {
                group.addTask {
                    try await Task.sleep(for: .milliseconds(50))
                    let now = clock.now - start
                    record.sleeperEnds.withLock { $0.append(now) }
                }
            }
            try await group.waitForAll()
        }
        let ends = record.sleeperEnds.withLock { $0 }
        let firstRead = try #require(record.firstRead.withLock { $0 })
        #expect(ends.count == 20)
        #expect(firstRead >= .milliseconds(4900), "BLPOP really blocked for about 5 s")
        let lastSleeper = try #require(ends.max())
        #expect(
            lastSleeper < firstRead,
            "every 50 ms sleeper finished (last at \(lastSleeper)) before the first blocking read returned (\(firstRead))")
        for consumer in consumers { try await consumer.cancel() }
        for connection in amqp { await connection.close() }
        for connection in connections { await connection.close() }
    }
}

final class Recorder: Sendable {
    let firstRead = Mutex<Duration?>(nil)
    let sleeperEnds = Mutex<[Duration]>([])
}
