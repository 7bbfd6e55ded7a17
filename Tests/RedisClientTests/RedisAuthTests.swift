import Foundation
import RedisClient
import TestSupport
import Testing

@Suite("AUTH and SELECT from the URL", .enabled(if: TestServers.available), .timeLimit(.minutes(4)))
struct RedisAuthTests {
    /// The test server's URL with another database and optional credentials.
    static func url(database: Int, userInfo: String? = nil) throws -> String {
        let base = try RedisURL(parsing: TestServers.redisURL)
        let credentials = userInfo.map { "\($0)@" } ?? ""
        return "redis://\(credentials)\(base.host):\(base.port)/\(database)"
    }

    @Test func selectsTheDatabaseOfTheURLOnEveryConnect() async throws {
        let key = TestServers.uniqueName("redisclient-db3")
        try await RedisTest.withConnection(Self.url(database: 3)) { db3, _ in
            try await db3.send("SET", key, "in-three")
            try await RedisTest.withConnection(Self.url(database: 0)) { db0, _ in
                #expect(try await db0.send("EXISTS", key).int == 0)
                try await db0.send("SELECT", 3)
                #expect(try await db0.send("GET", key).string == "in-three")
            }
            // After the server drops the connection, the reconnect selects database 3 again.
            let id = try #require(try await db3.send("CLIENT", "ID").int)
            try await RedisTest.withConnection { killer, _ in
                _ = try await killer.send("CLIENT", "KILL", "ID", id)
            }
            #expect(try await db3.send("GET", key).string == "in-three")
            #expect(try await db3.send("CLIENT", "ID").int != id)
            try await db3.send("DEL", key)
        }
    }

    @Test func outOfRangeDatabaseIsAClearError() async throws {
        do {
            _ = try await RedisConnection.connect(
                configuration: RedisTest.configuration(Self.url(database: 999_999)), logger: RedisTest.logger)
            Issue.record("SELECT 999999 succeeded")
        } catch let error as RedisError {
            #expect(error.code == .connectionFailed)
            #expect(error.command == "SELECT")
            #expect(error.message.contains("databases"), "\(error)")
        }
    }

    @Test func aclUserAndPasswordFromTheURL() async throws {
        let user = TestServers.uniqueName("redisclient-user")
        let password = "pa:ss@w/rd%\(UInt32.random(in: 0...UInt32.max))"
        let encoded = try #require(password.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        try await RedisTest.withConnection { admin, _ in
            try await admin.send("ACL", "SETUSER", user, "on", ">" + password, "~*", "+@all")

            let whoami = try await RedisTest.withConnection(Self.url(database: 0, userInfo: "\(user):\(encoded)")) { redis, _ in
                try await redis.send("ACL", "WHOAMI").string
            }
            #expect(whoami == user)

            do {
                _ = try await RedisConnection.connect(
                    configuration: RedisTest.configuration(Self.url(database: 0, userInfo: "\(user):wrong-secret-42")),
                    logger: RedisTest.logger
                )
                Issue.record("AUTH with a wrong password succeeded")
            } catch let error as RedisError {
                #expect(error.code == .authenticationFailed)
                #expect(error.command == "AUTH")
                #expect(error.serverMessage?.hasPrefix("WRONGPASS") == true, "\(error)")
                #expect(error.message.contains("\(user):***@"))
                #expect(!"\(error)".contains("wrong-secret-42"))
            }
            try await admin.send("ACL", "DELUSER", user)
        }
    }

    @Test func passwordForAServerWithoutOneIsAClearError() async throws {
        do {
            _ = try await RedisConnection.connect(
                configuration: RedisTest.configuration(Self.url(database: 0, userInfo: ":hunter2-secret")),
                logger: RedisTest.logger
            )
            Issue.record("AUTH succeeded on a server with no password")
        } catch let error as RedisError {
            #expect(error.code == .authenticationFailed)
            #expect(error.message.contains(":***@"))
            #expect(!"\(error)".contains("hunter2-secret"))
        }
    }
}

@Suite(
    "A password-protected Redis started by the test",
    .enabled(if: ProtectedRedis.executable != nil || TestServers.required),
    .timeLimit(.minutes(1))
)
struct ProtectedRedisTests {
    @Test func passwordOnlyURLAndMissingPassword() async throws {
        let server = try ProtectedRedis(password: "s3cret-pw")
        defer { server.stop() }
        try await server.waitUntilReady()

        try await RedisTest.withConnection("redis://:s3cret-pw@127.0.0.1:\(server.port)/2") { redis, prefix in
            try await redis.send("SET", prefix + "k", "v")
            #expect(try await redis.send("GET", prefix + "k").string == "v")
            #expect(try await redis.send("CLIENT", "INFO").string?.contains("db=2") == true)
        }

        do {
            _ = try await RedisConnection.connect(
                configuration: RedisTest.configuration("redis://127.0.0.1:\(server.port)/0"), logger: RedisTest.logger)
            Issue.record("connected without the password")
        } catch let error as RedisError {
            #expect(error.code == .authenticationFailed)
            #expect(error.serverMessage?.hasPrefix("NOAUTH") == true, "\(error)")
            #expect(error.message.contains("redis://:PASSWORD@"))
        }

        do {
            _ = try await RedisConnection.connect(
                configuration: RedisTest.configuration("redis://:not-it@127.0.0.1:\(server.port)/0"),
                logger: RedisTest.logger
            )
            Issue.record("connected with a wrong password")
        } catch let error as RedisError {
            #expect(error.code == .authenticationFailed)
            #expect(error.message.contains("redis://:***@127.0.0.1:\(server.port)/0"))
            #expect(!"\(error)".contains("not-it"))
        }
    }
}

extension ProtectedRedisTests {
    @Test func survivesAServerRestartWithScripts() async throws {
        var server = try ProtectedRedis(password: "restart-pw")
        defer { server.stop() }
        try await server.waitUntilReady()
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        let url = "redis://:restart-pw@127.0.0.1:\(server.port)/0"
        let redis = try await RedisConnection.connect(configuration: RedisTest.configuration(url), logger: RedisTest.logger)
        #expect(try await redis.evalSHA(script, keys: ["n"], args: [2]).int == 2)

        server.stop()
        try await server.waitUntilStopped()
        do {
            try await redis.send("PING")
            Issue.record("PING succeeded with the server stopped")
        } catch let error as RedisError {
            #expect([.connectionLost, .connectionFailed].contains(error.code), "\(error)")
            #expect(!"\(error)".contains("restart-pw"))
        }

        server = try ProtectedRedis(password: "restart-pw", port: server.port)
        // The connection heals on its own once the server is back; the new server has no scripts, so
        // EVALSHA must load the script again (and AUTH must be re-sent).
        let healed = try await RedisTest.eventually(timeout: .seconds(10)) {
            (try? await redis.evalSHA(script, keys: ["n"], args: [3]))?.int == 3
        }
        #expect(healed)
        await redis.close()
    }
}

/// A throwaway `redis-server --requirepass` on a random loopback port, for the AUTH tests.
struct ProtectedRedis {
    static let executable: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin"
        return (path.split(separator: ":").map { "\($0)/redis-server" } + ["/usr/bin/redis-server"])
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    let port: Int
    let process: Process

    init(password: String, port: Int? = nil) throws {
        let executable = try #require(Self.executable, "redis-server is not installed")
        self.port = try port ?? TestPorts.free()
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "--port", "\(self.port)", "--bind", "127.0.0.1", "--requirepass", password, "--save", "", "--appendonly", "no",
            "--dir", FileManager.default.temporaryDirectory.path,
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func waitUntilReady() async throws {
        let ready = try await RedisTest.eventually {
            do {
                let connection = try await RedisConnection.connect(
                    configuration: RedisTest.configuration("redis://127.0.0.1:\(port)/0"),
                    logger: RedisTest.logger
                )
                await connection.close()
                return true
            } catch let error as RedisError {
                return error.code == .authenticationFailed
            }
        }
        try #require(ready, "redis-server on port \(port) did not start")
    }

    /// Kills the server with SIGKILL (a crash, as far as clients can tell).
    ///
    /// Not `terminate()`: a child spawned from a Swift concurrency thread inherits a signal mask that
    /// blocks SIGTERM; and not `waitUntilExit()`, which spins a run loop on a cooperative thread.
    func stop() {
        kill(process.processIdentifier, SIGKILL)
    }

    /// Waits until the port no longer accepts connections.
    func waitUntilStopped() async throws {
        let stopped = try await RedisTest.eventually {
            do {
                let connection = try await RedisConnection.connect(
                    configuration: RedisTest.configuration("redis://127.0.0.1:\(port)/0"),
                    logger: RedisTest.logger
                )
                await connection.close()
                return false
            } catch let error as RedisError {
                return error.code == .connectionFailed
            }
        }
        try #require(stopped, "redis-server on port \(port) did not stop")
    }
}
