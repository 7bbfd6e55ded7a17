import RedisClient
import Synchronization
import TestSupport
import Testing

@Suite("RedisConnection against a real Redis", .enabled(if: TestServers.available), .timeLimit(.minutes(4)))
struct RedisConnectionTests {
    @Test func binarySafeValuesRoundTrip() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let value: [UInt8] = [0x00, 0x0D, 0x0A, 0xFF, 0x00, 0x24, 0x2A, 0x0D, 0x0A, 0x80, 0xFE]
            let key: [UInt8] = Array("\(prefix)bin\0key\r\n".utf8) + [0xFF]
            #expect(try await redis.send("SET", key, value) == .status("OK"))
            #expect(try await redis.send("GET", key) == .bulkString(value))
            #expect(try await redis.send("STRLEN", key).int == value.count)
            // Every byte value survives, and an empty value is not a missing one.
            let all = (0...255).map { UInt8($0) }
            try await redis.send("SET", prefix + "all", all)
            #expect(try await redis.send("GET", prefix + "all").bytes == all)
            try await redis.send("SET", prefix + "empty", [UInt8]())
            #expect(try await redis.send("GET", prefix + "empty") == .bulkString([]))
            #expect(try await redis.send("GET", prefix + "missing").isNull)
        }
    }

    @Test func conveniencesForStringIntAndDouble() async throws {
        try await RedisTest.withConnection { redis, prefix in
            #expect(try await redis.send("INCRBY", prefix + "n", 40).int == 40)
            #expect(try await redis.send("INCRBY", prefix + "n", -2).int == 38)
            #expect(try await redis.send("INCRBYFLOAT", prefix + "f", 1.25).double == 1.25)
            #expect(try await redis.send("INCRBYFLOAT", prefix + "f", 0.5).string == "1.75")
            try await redis.send("HSET", prefix + "h", "naïve", "ünïcode ✓")
            #expect(try await redis.send("HGET", prefix + "h", "naïve").string == "ünïcode ✓")
            #expect(try await redis.send("PING") == .status("PONG"))
            #expect(try await redis.send("DBSIZE").int != nil)
        }
    }

    @Test func thousandCommandPipeline() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let key = prefix + "counter"
            let replies = try await redis.pipeline(Array(repeating: RedisCommand("INCR", key), count: 1000))
            #expect(replies.count == 1000)
            #expect(replies == (1...1000).map { RedisReply.integer($0) })
            #expect(try await redis.send("GET", key).int == 1000)
        }
    }

    @Test func pipelineReturnsServerErrorsInPlace() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let replies = try await redis.pipeline([
                RedisCommand("SET", prefix + "s", "text"),
                RedisCommand("INCR", prefix + "s"),
                RedisCommand("LPUSH", prefix + "s", "x"),
                RedisCommand("GET", prefix + "s"),
            ])
            #expect(replies.count == 4)
            #expect(replies[0] == .status("OK"))
            #expect(replies[1].errorMessage?.hasPrefix("ERR value is not an integer") == true)
            #expect(replies[2].errorMessage?.hasPrefix("WRONGTYPE") == true)
            #expect(replies[3].string == "text")
            #expect(try await redis.pipeline([]).isEmpty)
        }
    }

    @Test func serverErrorThrowsWithCommandNameButNoArguments() async throws {
        try await RedisTest.withConnection { redis, prefix in
            try await redis.send("SET", prefix + "s", "text")
            do {
                try await redis.send("LPUSH", prefix + "s", "top-secret-payload")
                Issue.record("LPUSH on a string succeeded")
            } catch let error as RedisError {
                #expect(error.code == .server)
                #expect(error.command == "LPUSH")
                #expect(error.serverMessage?.hasPrefix("WRONGTYPE") == true)
                #expect(error.message.contains("WRONGTYPE"))
                #expect(!"\(error)".contains("top-secret-payload"))
                #expect(!"\(error)".contains(prefix))
            }
            // The connection is fine afterwards.
            #expect(try await redis.send("GET", prefix + "s").string == "text")
        }
    }

    @Test func nestedRepliesFromLua() async throws {
        try await RedisTest.withConnection { redis, _ in
            let reply = try await redis.send("EVAL", "return {1, 'two', {3, false}, redis.status_reply('FINE')}", 0)
            #expect(reply == .array([.integer(1), .bulkString(Array("two".utf8)), .array([.integer(3), .null]), .status("FINE")]))
        }
    }

    @Test func concurrentCallersGetTheirOwnReplies() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let counter = prefix + "shared"
            let results = try await withThrowingTaskGroup(of: (Int, String?, Int).self) { group in
                for index in 0..<500 {
                    group.addTask {
                        let key = "\(prefix)k\(index)"
                        try await redis.send("SET", key, "value-\(index)")
                        let value = try await redis.send("GET", key).string
                        let ticket = try await redis.send("INCR", counter).int ?? -1
                        return (index, value, ticket)
                    }
                }
                var results: [(Int, String?, Int)] = []
                for try await result in group {
                    results.append(result)
                }
                return results
            }
            #expect(results.count == 500)
            for (index, value, _) in results {
                #expect(value == "value-\(index)")
            }
            // Every INCR reply went to exactly one caller: the tickets are 1...500 with no repeats.
            #expect(results.map(\.2).sorted() == Array(1...500))
            #expect(try await redis.send("GET", counter).int == 500)
        }
    }

    @Test func concurrentPipelinesAreNotInterleaved() async throws {
        try await RedisTest.withConnection { redis, prefix in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<20 {
                    group.addTask {
                        let key = "\(prefix)list\(worker)"
                        let commands = (0..<50).map { RedisCommand("RPUSH", key, $0) }
                        let replies = try await redis.pipeline(commands)
                        #expect(replies == (1...50).map { RedisReply.integer($0) })
                    }
                }
                try await group.waitForAll()
            }
            let list = try await redis.send("LRANGE", prefix + "list7", 0, -1)
            #expect(list.array?.compactMap(\.int) == Array(0..<50))
        }
    }

    @Test func emptyCommandIsRejectedWithoutTouchingTheConnection() async throws {
        try await RedisTest.withConnection { redis, _ in
            do {
                _ = try await redis.pipeline([RedisCommand("PING"), RedisCommand(bytes: [])])
                Issue.record("an empty command was sent")
            } catch let error as RedisError {
                #expect(error.code == .protocol)
            }
            #expect(try await redis.send("PING") == .status("PONG"))
        }
    }

    @Test func closeFailsLaterCallsAndIsIdempotent() async throws {
        let redis = try await RedisConnection.connect(configuration: RedisTest.configuration(), logger: RedisTest.logger)
        #expect(try await redis.send("PING") == .status("PONG"))
        await redis.close()
        await redis.close()
        do {
            try await redis.send("PING")
            Issue.record("PING after close succeeded")
        } catch let error as RedisError {
            #expect(error.code == .closed)
        }
    }

    @Test func throughputOfConcurrentCallers() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let key = prefix + "bench"
            let tasks = 64
            let perTask = 500
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<tasks {
                    group.addTask {
                        for _ in 0..<perTask {
                            try await redis.send("INCR", key)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let elapsed = start.duration(to: .now)
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            #expect(try await redis.send("GET", key).int == tasks * perTask)

            let sequentialStart = ContinuousClock.now
            for _ in 0..<2000 {
                try await redis.send("INCR", key)
            }
            let sequential = sequentialStart.duration(to: .now)
            let sequentialSeconds = Double(sequential.components.seconds) + Double(sequential.components.attoseconds) / 1e18
            print(
                "RedisClient throughput: \(Int(Double(tasks * perTask) / seconds)) INCR/s from \(tasks) concurrent tasks, "
                    + "\(Int(2000 / sequentialSeconds)) INCR/s sequential"
            )
        }
    }
}
