import RedisClient
import TestSupport
import Testing

@Suite("Lua scripts with EVALSHA", .enabled(if: TestServers.available), .timeLimit(.minutes(4)))
struct RedisScriptTests {
    /// A script unique to one test (tests run in parallel and flush the script cache).
    static func incrementBy(_ tag: String) -> RedisScript {
        RedisScript(
            """
            -- \(tag)
            local value = redis.call('INCRBY', KEYS[1], ARGV[1])
            return {value, ARGV[2]}
            """
        )
    }

    @Test func sha1MatchesTheServers() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let script = Self.incrementBy(prefix + "é ✓")
            let loaded = try await redis.send("SCRIPT", "LOAD", script.source)
            #expect(loaded.string == script.sha1)
        }
    }

    @Test func scriptSurvivesScriptFlush() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let key = prefix + "n"
            let script = Self.incrementBy(prefix)
            let first = try await redis.evalSHA(script, keys: [key], args: [5, "a"])
            #expect(first == .array([.integer(5), .bulkString(Array("a".utf8))]))

            try await redis.send("SCRIPT", "FLUSH")
            #expect(try await redis.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(0)]))

            let second = try await redis.evalSHA(script, keys: [key], args: [7, "b"])
            #expect(second == .array([.integer(12), .bulkString(Array("b".utf8))]))
            #expect(try await redis.send("GET", key).int == 12)
        }
    }

    @Test func pipelinedScriptsSurviveScriptFlush() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let key = prefix + "n"
            let script = Self.incrementBy(prefix)
            _ = try await redis.evalSHA(script, keys: [key], args: [1, "warm"])
            try await redis.send("SCRIPT", "FLUSH")

            let replies = try await redis.pipeline([
                .evalSHA(script, keys: [key], args: [10, "x"]),
                RedisCommand("SET", prefix + "other", "v"),
                .evalSHA(script, keys: [key], args: [100, "y"]),
            ])
            #expect(replies.count == 3)
            #expect(replies[1] == .status("OK"))
            // Both EVALSHAs ran exactly once (1 + 10 + 100), each reporting its own argument.
            let results = [replies[0], replies[2]].compactMap { $0.array }
            #expect(results.map { $0.last?.string } == ["x", "y"])
            #expect(Set(results.compactMap { $0.first?.int }) == [11, 111])
            #expect(try await redis.send("GET", key).int == 111)
        }
    }

    @Test func concurrentFirstUsesOfAScriptAllSucceed() async throws {
        try await RedisTest.withConnection { redis, prefix in
            let key = prefix + "n"
            let script = RedisScript("return redis.call('INCR', KEYS[1]) -- \(prefix)")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<50 {
                    group.addTask { _ = try await redis.evalSHA(script, keys: [key]) }
                }
                try await group.waitForAll()
            }
            #expect(try await redis.send("GET", key).int == 50)
        }
    }

    @Test func brokenScriptReportsTheCompileErrorNotNoScript() async throws {
        try await RedisTest.withConnection { redis, _ in
            let broken = RedisScript("return this is not lua")
            do {
                _ = try await redis.evalSHA(broken)
                Issue.record("a broken script ran")
            } catch let error as RedisError {
                #expect(error.code == .server)
                #expect(error.command == "EVALSHA")
                #expect(error.serverMessage?.contains("compiling script") == true, "\(error)")
            }
        }
    }

    @Test func scriptErrorIsAServerError() async throws {
        try await RedisTest.withConnection { redis, _ in
            let failing = RedisScript("return redis.error_reply('ERR custom failure')")
            do {
                _ = try await redis.evalSHA(failing)
                Issue.record("the script did not fail")
            } catch let error as RedisError {
                #expect(error.code == .server)
                #expect(error.serverMessage?.contains("custom failure") == true)
            }
        }
    }
}
