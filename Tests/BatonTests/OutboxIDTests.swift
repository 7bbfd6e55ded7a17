import Testing

@testable import Baton

@Suite("Outbox entry ids")
struct OutboxIDTests {
    @Test func idsAreDistinctAcrossConcurrentCommitsAndCarryTheProcessPrefix() async {
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<8 { group.addTask { (0..<5_000).map { _ in RedisTaskStore.outboxID() } } }
            return await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(Set(ids).count == 40_000)
        #expect(ids.allSatisfy { $0.hasPrefix(RedisTaskStore.outboxIDPrefix) })
        // 16 hex digits and a dash: another process draws another prefix (2^64 of them).
        #expect(RedisTaskStore.outboxIDPrefix.utf8.count == 17)
    }
}
