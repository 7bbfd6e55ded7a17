import Logging
import RedisClient
import TestSupport

/// Shared helpers for the integration suites: a configuration for the test server, a logger, and key
/// cleanup by prefix (no FLUSHALL: other tests share the server).
enum RedisTest {
    static let logger: Logger = {
        var logger = Logger(label: "RedisClientTests")
        logger.logLevel = .info
        return logger
    }()

    static func configuration(_ url: String = TestServers.redisURL, _ adjust: (inout RedisConfiguration) -> Void = { _ in }) throws
        -> RedisConfiguration
    {
        var configuration = try RedisConfiguration(url: url)
        adjust(&configuration)
        return configuration
    }

    /// Runs `body` with a connection to the test server and a fresh key prefix, then deletes every key
    /// under that prefix. The cleanup runs on a connection of its own with the default timeouts, so a test that
    /// shortens `commandTimeout` (or breaks its connection) on purpose cannot fail in its cleanup on a loaded box.
    static func withConnection<Result>(
        _ url: String = TestServers.redisURL,
        adjust: (inout RedisConfiguration) -> Void = { _ in },
        isolation: isolated (any Actor)? = #isolation,
        _ body: (RedisConnection, String) async throws -> Result
    ) async throws -> Result {
        let prefix = TestServers.uniqueName("redisclient") + ":"
        return try await RedisConnection.withConnection(configuration: configuration(url, adjust), logger: logger) { connection in
            do {
                let result = try await body(connection, prefix)
                try await deleteKeys(prefix: prefix, url: url)
                return result
            } catch {
                try? await deleteKeys(prefix: prefix, url: url)
                throw error
            }
        }
    }

    static func deleteKeys(prefix: String, url: String) async throws {
        try await RedisConnection.withConnection(configuration: configuration(url), logger: logger) { connection in
            try await deleteKeys(prefix: prefix, on: connection)
        }
    }

    static func deleteKeys(prefix: String, on connection: RedisConnection) async throws {
        var cursor = "0"
        repeat {
            let reply = try await connection.send("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000)
            let parts = reply.array ?? []
            cursor = parts.first?.string ?? "0"
            let keys = parts.dropFirst().first?.array?.compactMap(\.bytes) ?? []
            if !keys.isEmpty {
                try await connection.send(RedisCommand("DEL", arguments: keys))
            }
        } while cursor != "0"
    }

    /// Polls `condition` until it holds or `timeout` passes.
    static func eventually(
        timeout: Duration = .seconds(5),
        isolation: isolated (any Actor)? = #isolation,
        _ condition: () async throws -> Bool
    ) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}
