import Baton
import Foundation
import Logging
import RedisClient
import TestSupport
import Testing

/// The `baton` CLI end to end: the built binary run as a child process, its exit codes and output shapes.
@Suite("CLI")
struct CLITests {
    /// Runs `baton arguments…` with the test servers in the environment and colour off; returns its exit
    /// status, stdout and stderr.
    static func baton(_ arguments: [String], environment extra: [String: String] = [:]) async throws -> (
        status: Int32, output: String, error: String
    ) {
        let executable = try #require(binary, "the baton binary is not built (run `swift build` first; scripts/test does)")
        var environment = ProcessInfo.processInfo.environment
        environment["BATON_AMQP_URL"] = TestServers.amqpURL
        environment["BATON_REDIS_URL"] = TestServers.redisURL
        environment["BATON_CONFIG"] = nil
        environment["NO_COLOR"] = "1"
        for (key, value) in extra { environment[key] = value }
        return try await run(executable, arguments, environment: environment)
    }

    /// `.build/<triple>/debug/baton`: next to the test executable, else under the package root.
    static let binary: String? = {
        var candidates: [String] = []
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append(URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("baton").path)
        }
        if let first = CommandLine.arguments.first {
            candidates.append(
                URL(fileURLWithPath: first).standardizedFileURL.deletingLastPathComponent().appendingPathComponent("baton").path)
        }
        candidates.append(ConfigTests.repositoryRoot.appendingPathComponent(".build/debug/baton").path)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Runs a child process to its end (killed after 150 s: `baton doctor` runs rabbitmqctl, an Erlang VM each, which takes tens of seconds on a busy 2-core box), its output captured in temporary files; waits
    /// through the termination handler, so no thread of the cooperative pool blocks.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]) async throws -> (
        status: Int32, output: String, error: String
    ) {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("baton-cli-\(UUID().uuidString)")
        let outputURL = base.appendingPathExtension("out")
        let errorURL = base.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outputURL)
            try? FileManager.default.removeItem(at: errorURL)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        let output = try FileHandle(forWritingTo: outputURL)
        let error = try FileHandle(forWritingTo: errorURL)
        process.standardOutput = output
        process.standardError = error
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
                return
            }
            let pid = process.processIdentifier
            DispatchQueue.global().asyncAfter(deadline: .now() + 150) { if process.isRunning { kill(pid, SIGKILL) } }
        }
        try? output.close()
        try? error.close()
        let stdout = (try? String(contentsOf: outputURL, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOf: errorURL, encoding: .utf8)) ?? ""
        return (status, stdout, stderr)
    }

    /// A unique tenant with `count` tasks written straight through the store, then cancelled (a terminal
    /// status): no worker is needed and none runs them.
    static func cancelledTasks(_ count: Int) async throws -> (tenant: String, ids: [String]) {
        let tenant = TestServers.uniqueName("cli-tenant")
        let redis = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Logger(label: "baton.cli-tests"))
        let store = RedisTaskStore(redis: redis)
        var ids: [String] = []
        do {
            for index in 0..<count {
                let id = TestServers.uniqueName("cli-\(index)")
                _ = try await store.submit(
                    NewTask(
                        id: id, agent: "stepchain", inputJSON: "{\"steps\":1}", stateJSON: "{\"records\":[]}", firstStep: "append",
                        queue: "default", limits: BudgetLimits(maxSteps: 5, maxAttempts: 1), tenant: tenant))
                let answer = try await store.control(task: id, action: "cancel", reason: "cli test fixture", actor: "cli-tests")
                #expect(answer.first == "cancelled", "fixture task \(id): \(answer)")
                ids.append(id)
            }
        } catch {
            await redis.close()
            throw error
        }
        await redis.close()
        return (tenant, ids)
    }

    // MARK: - Without servers

    @Test func aUsageErrorExits64() async throws {
        let badLimit = try await Self.baton(["list", "--limit", "0"])
        #expect(badLimit.status == 64)
        #expect(badLimit.error.contains("--limit"))
        let unknownOption = try await Self.baton(["status", "x", "--no-such-option"])
        #expect(unknownOption.status == 64)
        let missingArgument = try await Self.baton(["status"])
        #expect(missingArgument.status == 64)
        let missingReason = try await Self.baton(["dead", "discard", "some-id"])
        #expect(missingReason.status == 64)
        #expect(badLimit.output.isEmpty)
    }

    @Test func aBadConfigurationKeyExits2NamingTheKeyAndTheFile() async throws {
        let path = try ConfigTests.file("worker:\n  concurency: 4\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await Self.baton(["list", "--config", path])
        #expect(result.status == 2)
        #expect(result.error.contains("worker.concurency"))
        #expect(result.error.contains(path))
        #expect(result.output.isEmpty)
    }

    @Test func aBadConfigurationValueFromTheEnvironmentExits2NamingTheVariable() async throws {
        let result = try await Self.baton(["status", "x"], environment: ["BATON_WORKER_PREFETCH": "0"])
        #expect(result.status == 2)
        #expect(result.error.contains("BATON_WORKER_PREFETCH"))
    }

    @Test func anUnreachableRedisExits2NamingTheURL() async throws {
        let url = "redis://127.0.0.1:1/0"
        let result = try await Self.baton(["status", "some-task", "--redis", url])
        #expect(result.status == 2)
        #expect(result.error.contains(url))
        #expect(result.output.isEmpty)
    }

    // MARK: - With the servers

    @Test(.enabled(if: TestServers.available)) func statusOfAMissingTaskExits4() async throws {
        let id = TestServers.uniqueName("cli-missing")
        let result = try await Self.baton(["status", id])
        #expect(result.status == 4)
        #expect(result.error.contains(id))
        #expect(result.output.isEmpty)
        let history = try await Self.baton(["history", id])
        #expect(history.status == 4)
    }

    @Test(.enabled(if: TestServers.available)) func statusJSONIsTheTaskView() async throws {
        let (_, ids) = try await Self.cancelledTasks(1)
        let result = try await Self.baton(["status", ids[0], "--json"])
        #expect(result.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        #expect(object["id"] as? String == ids[0])
        #expect(object["status"] as? String == "cancelled")
        #expect(object["v"] as? Int == 1)
        #expect((object["budget"] as? [String: Any])?["used"] != nil)
    }

    @Test(.enabled(if: TestServers.available)) func listJSONIsItemsAndNextCursor() async throws {
        let (tenant, ids) = try await Self.cancelledTasks(3)
        let result = try await Self.baton(["list", "--tenant", tenant, "-o", "json"])
        #expect(result.status == 0, "\(result.error)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["items", "next_cursor"])
        let items = try #require(object["items"] as? [[String: Any]])
        #expect(Set(items.compactMap { $0["id"] as? String }) == Set(ids))
        #expect(items.allSatisfy { $0["tenant"] as? String == tenant && $0["agent"] as? String == "stepchain" })
        #expect(object["next_cursor"] is NSNull)

        // A page of 2 of the 3 has a cursor, and the cursor gives the third.
        let first = try await Self.baton(["list", "--tenant", tenant, "--json", "--limit", "2"])
        let firstPage = try #require(try JSONSerialization.jsonObject(with: Data(first.output.utf8)) as? [String: Any])
        let cursor = try #require(firstPage["next_cursor"] as? String)
        let second = try await Self.baton(["list", "--tenant", tenant, "--json", "--limit", "2", "--cursor", cursor])
        let secondPage = try #require(try JSONSerialization.jsonObject(with: Data(second.output.utf8)) as? [String: Any])
        let seen = ((firstPage["items"] as? [[String: Any]] ?? []) + (secondPage["items"] as? [[String: Any]] ?? [])).compactMap {
            $0["id"] as? String
        }
        #expect(seen.count == 3 && Set(seen) == Set(ids))
    }

    @Test(.enabled(if: TestServers.available)) func listJSONLIsOneObjectPerLine() async throws {
        let (tenant, ids) = try await Self.cancelledTasks(2)
        let result = try await Self.baton(["list", "--tenant", tenant, "--output", "jsonl"])
        #expect(result.status == 0)
        let lines = result.output.split(separator: "\n")
        #expect(lines.count == 2)
        let parsed = try lines.map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        #expect(Set(parsed.compactMap { $0["id"] as? String }) == Set(ids))

        let quiet = try await Self.baton(["list", "--tenant", tenant, "-q"])
        #expect(Set(quiet.output.split(separator: "\n").map(String.init)) == Set(ids))

        let text = try await Self.baton(["list", "--tenant", tenant])
        let rows = text.output.split(separator: "\n")
        #expect(rows.first?.hasPrefix("ID") == true && rows.count == 3)
        #expect(!text.output.contains("\u{1B}["), "no colour when NO_COLOR is set and stdout is not a terminal")
    }

    @Test(.enabled(if: TestServers.available)) func cancelOfAFinishedTaskExits5() async throws {
        let (_, ids) = try await Self.cancelledTasks(1)
        let result = try await Self.baton(["cancel", ids[0], "--reason", "again"])
        #expect(result.status == 5)
        #expect(result.output.contains("cannot cancel"))
        #expect(result.output.contains("cancelled"))

        let json = try await Self.baton(["pause", ids[0], "--json"])
        #expect(json.status == 5)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
        let item = try #require((object["items"] as? [[String: Any]])?.first)
        #expect(item["result"] as? String == "conflict")
        #expect(item["status"] as? String == "cancelled")

        let missing = try await Self.baton(["cancel", TestServers.uniqueName("cli-missing")])
        #expect(missing.status == 4)
    }

    @Test(.enabled(if: TestServers.available)) func historyMarksTheBranch() async throws {
        let (_, ids) = try await Self.cancelledTasks(1)
        let text = try await Self.baton(["history", ids[0]])
        #expect(text.status == 0)
        let lines = text.output.split(separator: "\n")
        #expect(lines.count >= 2)
        #expect(lines.allSatisfy { $0.hasPrefix("[b0] ") })
        #expect(text.output.contains("submitted") && text.output.contains("cancelled"))

        let jsonl = try await Self.baton(["history", ids[0], "-o", "jsonl"])
        let types = try jsonl.output.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])["type"] as? String
        }
        #expect(types.first == "submitted" && types.last == "cancelled")
    }

    @Test(.enabled(if: TestServers.available)) func deadShowOfAMissingLetterExits4() async throws {
        let result = try await Self.baton(["dead", "show", TestServers.uniqueName("cli-dead")])
        #expect(result.status == 4)
        let discard = try await Self.baton(["dead", "discard", TestServers.uniqueName("cli-dead"), "--reason", "test"])
        #expect(discard.status == 4)
        let list = try await Self.baton(["dead", "list", "--json", "--limit", "1"])
        #expect(list.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(list.output.utf8)) as? [String: Any])
        #expect(object["items"] is [Any])
    }

    @Test(.enabled(if: TestServers.available)) func workersJSONIsAList() async throws {
        let result = try await Self.baton(["workers", "-o", "json"])
        #expect(result.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        #expect(object["items"] is [Any])
    }
}
