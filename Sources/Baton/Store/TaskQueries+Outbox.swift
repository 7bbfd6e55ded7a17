import Foundation
import RedisClient

extension TaskQueries {
    /// A task whose outbox has held messages since its last update, longer than the bound asked for.
    public struct StuckOutbox: Sendable, Hashable, Codable {
        public var task: String
        /// The routing keys of the messages it holds (step queues, for step messages).
        public var routingKeys: [String]
        /// Milliseconds since the task's last update (the commit that wrote its outbox, or later).
        public var ageMilliseconds: Int64

        enum CodingKeys: String, CodingKey {
            case task
            case routingKeys = "routing_keys"
            case ageMilliseconds = "age_ms"
        }
    }

    /// Tasks whose outbox still holds messages `olderThan` after the task's last update: committed, and not
    /// taken by RabbitMQ since (a queue nobody declared, a full queue, a broker refusing publishes). A healthy
    /// fleet empties an outbox within milliseconds, and the outbox sweep retries one left by a crash within
    /// seconds. Reads at most `limit` entries from each end of each bucket's outbox index.
    public func stuckOutboxes(olderThan: Duration, limit: Int = 1000) async throws -> [StuckOutbox] {
        let now = try await redis.serverTimeMilliseconds()
        let bound = olderThan.wholeMilliseconds
        // Both ends of each index: the oldest entries, and the tasks the sweep has put off (scored ahead of now).
        let indexes = try await redis.pipeline(
            (0..<keys.bucketCount).flatMap {
                [
                    RedisCommand("ZRANGE", keys.outboxIndex(bucket: $0), 0, limit - 1),
                    RedisCommand("ZRANGE", keys.outboxIndex(bucket: $0), -limit, -1),
                ]
            })
        var seen = Set<String>()
        let ids = indexes.flatMap { ($0.array ?? []).compactMap(\.string) }.filter { seen.insert($0).inserted }
        guard !ids.isEmpty else { return [] }
        let replies = try await redis.pipeline(
            ids.flatMap { [RedisCommand("HGET", keys.task($0), "updated_at"), RedisCommand("HVALS", keys.outbox($0))] })
        var stuck: [StuckOutbox] = []
        for (index, id) in ids.enumerated() {
            let messages = replies[2 * index + 1].array ?? []
            guard !messages.isEmpty, let updated = Int64(replies[2 * index].string ?? ""), now - updated > bound else { continue }
            let routingKeys = messages.compactMap { reply -> String? in
                guard let bytes = reply.bytes else { return nil }
                return (try? JSONCoding.decoder.decode(OutboxMessage.self, from: Data(bytes)))?.routingKey
            }
            stuck.append(StuckOutbox(task: id, routingKeys: Array(Set(routingKeys)).sorted(), ageMilliseconds: now - updated))
        }
        return stuck.sorted { $0.ageMilliseconds > $1.ageMilliseconds }
    }
}
