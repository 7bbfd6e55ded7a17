import Foundation
import Logging
import RedisClient
import TestSupport
import Testing

@testable import Baton

/// The outbox sweep's claim script on a real Redis, under a private key prefix.
@Suite("Outbox sweep", .enabled(if: TestServers.available))
struct OutboxSweepTests {
    @Test func anEmptyOutboxLeavesTheIndexAndAPendingOneIsClaimed() async throws {
        let redis = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Logger(label: "baton.outbox-tests"))
        let keys = RedisKeys(prefix: TestServers.uniqueName("outbox-test") + ":")
        let ids = ["gone", "live", "root/1"]
        do {
            for id in ids { try await redis.send("ZADD", keys.outboxIndex(bucket: keys.bucket(of: id)), 1, id) }
            try await redis.send("HSET", keys.outbox("live"), "entry-1", "{}")
            try await redis.send("HSET", keys.outbox("root/1"), "entry-1", "{}")
            var claimed: [String] = []
            for bucket in Set(ids.map(keys.bucket(of:))) {
                let reply = try await redis.evalSHA(
                    RedisTaskStore.claimOutboxScript, keys: [keys.outboxIndex(bucket: bucket)], args: [5000, 200, keys.prefix])
                claimed += (reply.array ?? []).compactMap(\.string)
            }
            #expect(Set(claimed) == ["live", "root/1"])
            let goneScore = try await redis.send("ZSCORE", keys.outboxIndex(bucket: keys.bucket(of: "gone")), "gone")
            #expect(goneScore.isNull, "a task with an empty outbox is dropped from the index")
            let liveScore = try await redis.send("ZSCORE", keys.outboxIndex(bucket: keys.bucket(of: "live")), "live")
            #expect((Int64(liveScore.string ?? "") ?? 0) > 1, "a claimed entry is re-scored to now")
        } catch {
            await redis.close()
            throw error
        }
        await redis.close()
    }
}
