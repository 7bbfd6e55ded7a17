import Baton
import Foundation
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: baton watch

    static func reportAwaitingApproval(_ name: String) -> SubmitRequest {
        SubmitRequest(id: TestServers.uniqueName(name), agent: "report", input: ["documents": 2, "think_ms": 50])
    }

    @Test("baton watch into a pipe prints one plain line per event, in order, until the task ends (exit 0)", .timeLimit(.minutes(4)))
    func watchIntoAPipe() async throws {
        try await Harness.withClient { client in
            let worker = try await Harness.startWorker("watch-pipe", client: client)
            defer { worker.process.sigkill() }
            let id = try await Harness.submit(client, Self.reportAwaitingApproval("watch-pipe"))
            async let watched = CLITests.baton(["watch", id])
            _ = try await Harness.waitForStatus(client, id, ["waiting"], workers: [worker])
            _ = try await client.signal(
                TaskSignal(task: id, name: "approve", payloadJSON: #"{"comment": "ok"}"#, id: nil, actor: "test", reason: "watch test"))
            let result = try await watched
            #expect(result.status == 0, "\(result.error)")
            let lines = result.output.split(separator: "\n").map(String.init)
            #expect(!lines.contains { $0.contains("\u{1B}[") }, "no terminal escapes into a pipe")
            let types = lines.dropLast().map { line in
                line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(2).first.map(String.init) ?? ""
            }
            let history = try await client.queries.history(id).map(\.type)
            #expect(types == history)
            #expect(types.first == "submitted")
            #expect(types.contains("waiting"))
            #expect(types.contains("woke"))
            #expect(types.last == "succeeded")
            #expect(lines.contains { $0.contains(" progress ") && $0.contains("50% 1/2 documents") })
            #expect(lines.last == "watched 1 task(s): 1 succeeded")

            // -o jsonl: one JSON event per line, the task named in each.
            let jsonl = try await CLITests.baton(["watch", id, "-o", "jsonl"])
            #expect(jsonl.status == 0)
            let objects = try jsonl.output.split(separator: "\n").map { line in
                try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            }
            #expect(objects.map { $0["type"] as? String ?? "" } == history)
            #expect(objects.allSatisfy { $0["task_id"] as? String == id && $0["agent"] as? String == "report" })
        }
    }

    @Test("baton watch exits 4 for a missing task and 3 when a watched task ends in another status than succeeded")
    func watchExitCodes() async throws {
        let missing = try await CLITests.baton(["watch", TestServers.uniqueName("watch-missing")])
        #expect(missing.status == 4)
        #expect(missing.error.contains("not found"))
        let (_, ids) = try await CLITests.cancelledTasks(1)
        let cancelled = try await CLITests.baton(["watch", ids[0]])
        #expect(cancelled.status == 3)
        #expect(cancelled.output.split(separator: "\n").last == "watched 1 task(s): 1 cancelled")
    }

    @Test(
        "baton watch on a terminal (tmux) draws progress bars, shows what a task waits for, and ends when the tasks end",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux")), .timeLimit(.minutes(4)))
    func watchInATerminal() async throws {
        try await Harness.withClient { client in
            let worker = try await Harness.startWorker("watch-tty", client: client)
            defer { worker.process.sigkill() }
            let report = try await Harness.submit(client, Self.reportAwaitingApproval("watch-tty"))
            let chain = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("watch-tty-chain"), agent: "stepchain", input: ["steps": 5]))
            let session = TestServers.uniqueName("watch").replacingOccurrences(of: ".", with: "-")
            let binary = try Harness.baton()
            let command =
                "env BATON_AMQP_URL='\(TestServers.amqpURL)' BATON_REDIS_URL='\(TestServers.redisURL)' NO_COLOR=1 "
                + "'\(binary)' watch \(report) \(chain); echo WATCH-EXIT=$?; sleep 120"
            try await Self.tmux(["new-session", "-d", "-s", session, "-x", "200", "-y", "20", command])
            defer { Task { _ = try? await Self.tmux(["kill-session", "-t", session]) } }

            var screen = ""
            let waitingShown = try await eventually(timeout: .seconds(30), interval: .milliseconds(200)) {
                screen = try await Self.tmux(["capture-pane", "-p", "-t", session])
                // The report's line in status `waiting` (its progress message says "waiting for approve" a moment
                // before the wait is committed, while it still runs).
                let line = screen.split(separator: "\n").first { $0.hasPrefix(report) } ?? ""
                return line.contains(" waiting ") && line.contains("waiting for approve or reject, timeout") && screen.contains("1/2 ended")
            }
            #expect(waitingShown, "the screen was:\n\(screen)")
            let reportLine = screen.split(separator: "\n").first { $0.hasPrefix(report) } ?? ""
            #expect(reportLine.contains("████████████████████ 100%"), "\(reportLine)")
            #expect(reportLine.contains("write@"))
            #expect(screen.split(separator: "\n").first { $0.hasPrefix(chain) }?.contains("succeeded") == true)
            #expect(!screen.contains("WATCH-EXIT"))

            _ = try await client.signal(TaskSignal(task: report, name: "approve", payloadJSON: "", id: nil, actor: "test", reason: ""))
            let ended = try await eventually(timeout: .seconds(30), interval: .milliseconds(200)) {
                screen = try await Self.tmux(["capture-pane", "-p", "-t", session])
                return screen.contains("WATCH-EXIT=")
            }
            #expect(ended, "the screen was:\n\(screen)")
            #expect(screen.contains("WATCH-EXIT=0"))
            #expect(screen.contains("2/2 ended"))
            // The frame is redrawn in place: each task has one line on the screen, not one per refresh.
            #expect(screen.split(separator: "\n").filter { $0.hasPrefix(report) }.count == 1)
        }
    }

    /// Runs `tmux arguments…`; returns its stdout, or fails with its stderr.
    ///
    /// Spawned and reaped with `waitpid` on a thread of its own, not with Foundation's `Process`: `new-session`
    /// starts the tmux server, which inherits the socket `Process` watches for the child's end, so `Process` would
    /// wait for the server to exit.
    @discardableResult
    static func tmux(_ arguments: [String]) async throws -> String {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("baton-tmux-\(UUID().uuidString)").path
        defer {
            try? FileManager.default.removeItem(atPath: base + ".out")
            try? FileManager.default.removeItem(atPath: base + ".err")
        }
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let pid = try ChildProcess.spawn(
            "/usr/bin/tmux", arguments, environment: environment, outputFile: base + ".out", errorFile: base + ".err")
        let status: Int32 = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                continuation.resume(returning: status)
            }
        }
        let output = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        let error = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
        try #require(status == 0, "tmux \(arguments.joined(separator: " ")) failed (status \(status)): \(error)")
        return output
    }
}
