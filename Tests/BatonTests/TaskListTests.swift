import Baton
import Foundation
import Logging
import RedisClient
import TestSupport
import Testing

/// `TaskQueries.list` paging over hand-written index entries under a private key prefix: filters that the
/// indexes cannot express, newer tasks of other tenants, and many tasks updated in the same millisecond.
@Suite("Task list paging", .enabled(if: TestServers.available))
struct TaskListTests {
    /// Writes `count` task hashes with `tenant`, indexed in `status` at the given scores.
    static func seed(_ redis: RedisConnection, _ keys: RedisKeys, ids: [String], tenant: String, status: String, score: (Int) -> Int64)
        async throws
    {
        var commands: [RedisCommand] = []
        for (n, id) in ids.enumerated() {
            commands.append(RedisCommand("HSET", keys.task(id), "id", id, "agent", "stepchain", "status", status, "tenant", tenant))
            commands.append(RedisCommand("ZADD", keys.index(bucket: keys.bucket(of: id), status: status), score(n), id))
        }
        _ = try await redis.pipeline(commands)
    }

    static func withQueries(_ body: (TaskQueries, RedisConnection, RedisKeys) async throws -> Void) async throws {
        let redis = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Logger(label: "baton.list-tests"))
        var settings = RedisTaskStore.Settings()
        settings.keys = RedisKeys(prefix: TestServers.uniqueName("list-test") + ":")
        let queries = TaskQueries(store: RedisTaskStore(redis: redis, settings: settings))
        do {
            try await body(queries, redis, settings.keys)
        } catch {
            await redis.close()
            throw error
        }
        await redis.close()
    }

    /// Follows the cursors to the end; returns every id seen, in order, and the number of pages.
    static func all(_ queries: TaskQueries, _ base: TaskQueries.Filter) async throws -> (ids: [String], pages: Int) {
        var filter = base
        var ids: [String] = []
        var pages = 0
        while true {
            let page = try await queries.list(filter)
            pages += 1
            ids += page.items.map(\.id)
            guard let next = page.nextCursor else { return (ids, pages) }
            guard let cursor = TaskQueries.ListCursor(next) else {
                Issue.record("next_cursor \(next) does not parse")
                return (ids, pages)
            }
            filter.cursor = cursor
            try #require(pages < 1000, "paging does not end")
        }
    }

    @Test func aTenantsOlderTasksAreFoundBehindManyNewerTasksOfOthers() async throws {
        try await Self.withQueries { queries, redis, keys in
            let mine = (0..<3).map { "mine-\($0)" }
            try await Self.seed(redis, keys, ids: mine, tenant: "mine", status: "cancelled") { 1_000 + Int64($0) }
            try await Self.seed(redis, keys, ids: (0..<400).map { "other-\($0)" }, tenant: "other", status: "cancelled") {
                5_000 + Int64($0)
            }
            var filter = TaskQueries.Filter()
            filter.tenant = "mine"
            filter.limit = 2
            let first = try await queries.list(filter)
            #expect(first.items.map(\.id) == ["mine-2", "mine-1"])
            let cursor = try #require(first.nextCursor.flatMap(TaskQueries.ListCursor.init))
            filter.cursor = cursor
            let second = try await queries.list(filter)
            #expect(second.items.map(\.id) == ["mine-0"])
            #expect(second.nextCursor == nil)
        }
    }

    @Test func tiedScoresAcrossIndexesArePagedOnceEach() async throws {
        try await Self.withQueries { queries, redis, keys in
            // 120 tasks in three statuses, all updated in the same two milliseconds.
            let ids = (0..<120).map { String(format: "t-%03d", $0) }
            for (n, status) in ["queued", "succeeded", "failed"].enumerated() {
                try await Self.seed(redis, keys, ids: Array(ids[(n * 40)..<(n * 40 + 40)]), tenant: "x", status: status) {
                    7_000 + Int64($0 % 2)
                }
            }
            var filter = TaskQueries.Filter()
            filter.limit = 7
            let result = try await Self.all(queries, filter)
            #expect(result.ids.count == 120)
            #expect(Set(result.ids) == Set(ids))
            #expect(result.pages == 18)
            // Most recent first, ties by id descending.
            let expected = ids.sorted { (a, b) in
                let sa = Int(a.suffix(3))! % 2
                let sb = Int(b.suffix(3))! % 2
                return sa != sb ? sa > sb : a > b
            }
            #expect(result.ids == expected)
        }
    }

    @Test func aScanBudgetEndsAShortPageWithACursorThatContinues() async throws {
        try await Self.withQueries { queries, redis, keys in
            try await Self.seed(redis, keys, ids: ["needle"], tenant: "rare", status: "succeeded") { _ in 10 }
            try await Self.seed(redis, keys, ids: (0..<300).map { "hay-\($0)" }, tenant: "common", status: "succeeded") {
                100 + Int64($0)
            }
            var filter = TaskQueries.Filter()
            filter.tenant = "rare"
            filter.limit = 1
            filter.scanBudget = 50
            let first = try await queries.list(filter)
            #expect(first.items.isEmpty)
            #expect(first.nextCursor != nil)
            let result = try await Self.all(queries, filter)
            #expect(result.ids == ["needle"])
        }
    }

    @Test func cursorsParseAndPrint() {
        #expect(TaskQueries.ListCursor("123:a.b:c") == TaskQueries.ListCursor(score: 123, id: "a.b:c"))
        #expect(TaskQueries.ListCursor("123") == TaskQueries.ListCursor(score: 123, id: nil))
        #expect(TaskQueries.ListCursor("x:1") == nil)
        #expect(TaskQueries.ListCursor("5:") == nil)
        #expect(TaskQueries.ListCursor(score: 9, id: "t").description == "9:t")
    }
}
