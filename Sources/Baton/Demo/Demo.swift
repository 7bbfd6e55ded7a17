import Foundation
import Logging

/// `baton demo`: three workers, twenty `report` tasks, one worker killed with SIGKILL mid-run and a new one
/// started; each task's outline waits for a human's approval, which the demo gives by running
/// `baton approve TASK --comment …` (the real CLI, as a child process) once a task has waited `approvalDelay`;
/// live status until every task ends, then a summary of what happened. The `report` agent's model is a
/// scripted stand-in (``ScriptedModel`` in BatonExamples), not a real LLM.
public struct Demo: Sendable {
    public var amqpURL: String
    public var redisURL: String
    /// The `baton` executable to start workers with.
    public var executable: String
    /// Where worker logs go.
    public var directory: String
    public var tasks = 20
    public var documents = 8
    public var thinkMilliseconds = 250
    /// How long a task visibly waits for approval before the demo approves it from the CLI.
    public var approvalDelay: Duration = .seconds(2)

    public init(amqpURL: String, redisURL: String, executable: String, directory: String) {
        self.amqpURL = amqpURL
        self.redisURL = redisURL
        self.executable = executable
        self.directory = directory
    }

    struct WorkerProcess {
        var id: String
        var pid: pid_t
        var log: String
    }

    var childEnvironment: [String] {
        var environment = ProcessInfo.processInfo.environment
        environment["BATON_AMQP_URL"] = amqpURL
        environment["BATON_REDIS_URL"] = redisURL
        return environment.map { "\($0.key)=\($0.value)" }
    }

    func startWorker(_ id: String) throws -> WorkerProcess {
        let log = "\(directory)/\(id).log"
        let pid = try ChildProcess.spawn(
            executable, ["worker", "--id", id, "--lease", "5", "--concurrency", "8"], environment: childEnvironment, outputFile: log)
        return WorkerProcess(id: id, pid: pid, log: log)
    }

    /// Approves the outlines of `tasks` with the real CLI (`baton approve TASK --comment …`), one child process
    /// each; returns the command lines run. A failed approval throws with the end of its output.
    func approve(_ tasks: [String]) throws -> [String] {
        var started: [(task: String, pid: pid_t, log: String)] = []
        for task in tasks {
            let log = "\(directory)/approve-\(task).log"
            let pid = try ChildProcess.spawn(
                executable, ["approve", task, "--comment", "outline looks right (demo)"], environment: childEnvironment, outputFile: log)
            started.append((task, pid, log))
        }
        var lines: [String] = []
        for child in started {
            var status: Int32 = 0
            while waitpid(child.pid, &status, 0) == -1 && errno == EINTR {}
            guard status == 0 else {
                let output = (try? String(contentsOfFile: child.log, encoding: .utf8)) ?? ""
                throw BatonError(.internalError, "`baton approve \(child.task)` failed (status \(status)): \(output.suffix(500))")
            }
            lines.append("baton approve \(child.task) --comment 'outline looks right (demo)'")
        }
        return lines
    }

    static func reap(_ pid: pid_t) {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    }

    public func run(print: @escaping @Sendable (String) -> Void, interactive: Bool) async throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var logger = Logger(label: "baton.demo")
        logger.logLevel = .warning
        let client = try await BatonClient.connect(amqpURL: amqpURL, redisURL: redisURL, publishing: true, logger: logger)
        let run = TaskID.generate().suffix(6)
        var workers = try (1...3).map { try startWorker("demo-\(run)-w\($0)") }
        defer {
            for worker in workers {
                kill(worker.pid, SIGTERM)
                Self.reap(worker.pid)
            }
        }
        print("started 3 workers: \(workers.map(\.id).joined(separator: ", ")) (logs in \(directory))")
        let deadline = ContinuousClock.now + .seconds(30)
        while Set(try await client.queries.workers().map(\.id)).isSuperset(of: workers.map(\.id)) == false {
            guard ContinuousClock.now < deadline else {
                throw BatonError(.connection, "the demo workers did not start; see \(directory)/*.log")
            }
            try await Task.sleep(for: .milliseconds(100))
        }

        var ids: [String] = []
        for index in 1...tasks {
            let id = "demo-\(run)-\(String(format: "%02d", index))"
            let input: JSONValue = [
                "documents": .int(Int64(documents)), "think_ms": .int(Int64(thinkMilliseconds)),
                "topic": .string("incident reports batch \(index)"),
            ]
            let reply = try await client.submit(
                SubmitRequest(id: id, agent: "report", input: input, budget: BudgetRequest(maxCostUSD: 1.0)))
            if let error = reply.error { throw BatonError(.invalidMessage, "submit refused: \(error.message)") }
            ids.append(id)
        }
        print("submitted \(tasks) report tasks (\(documents) documents each; the model is a scripted stand-in)")

        let started = ContinuousClock.now
        var killed: (worker: String, pid: pid_t, at: Date, tasks: [(id: String, step: String, seq: Int64)])? = nil
        var views: [TaskView] = []
        var lastPlain = ContinuousClock.now - .seconds(10)
        var waitingSince: [String: ContinuousClock.Instant] = [:]
        var approved: Set<String> = []
        var approvals: [String] = []
        while true {
            views = try await withThrowingTaskGroup(of: TaskView?.self) { group in
                for id in ids { group.addTask { try await client.queries.task(id) } }
                var out: [TaskView] = []
                for try await view in group { if let view { out.append(view) } }
                return out.sorted { $0.id < $1.id }
            }
            let done = views.filter(\.isTerminal).count
            let progress = views.map { $0.isTerminal ? 1 : ($0.progress?.fraction ?? 0) }.reduce(0, +) / Double(max(1, views.count))
            if killed == nil && (progress >= 0.3 || ContinuousClock.now - started > .seconds(20)) {
                // Kill the worker that holds the most leases right now.
                let owners = Dictionary(grouping: views.compactMap { view in view.lease.map { ($0.owner, view) } }, by: \.0)
                let victim = workers.max { (owners[$0.id]?.count ?? 0) < (owners[$1.id]?.count ?? 0) } ?? workers[0]
                let running = (owners[victim.id] ?? []).map { (id: $0.1.id, step: $0.1.step ?? "-", seq: $0.1.seq) }
                kill(victim.pid, SIGKILL)
                Self.reap(victim.pid)
                killed = (victim.id, victim.pid, Date(), running)
                workers.removeAll { $0.id == victim.id }
                let replacement = try startWorker("demo-\(run)-w4")
                workers.append(replacement)
                print(
                    "⚡ SIGKILL \(victim.id) (pid \(victim.pid)) while it ran \(running.count) steps: "
                        + running.map { "\($0.id) \($0.step)@\($0.seq)" }.joined(separator: ", ") + "; started \(replacement.id)")
            }
            // The human checkpoint: a task whose outline has waited `approvalDelay` is approved from the CLI.
            let now = ContinuousClock.now
            for view in views where view.status == "waiting" && !approved.contains(view.id) && waitingSince[view.id] == nil {
                waitingSince[view.id] = now
            }
            let due = views.filter { view in
                view.status == "waiting" && !approved.contains(view.id)
                    && (waitingSince[view.id].map { now - $0 >= approvalDelay } ?? false)
            }.map(\.id)
            if !due.isEmpty {
                let lines = try approve(due)
                approved.formUnion(due)
                approvals.append(contentsOf: lines)
                if !interactive { for line in lines { print("$ \(line)") } }
            }
            if interactive {
                var screen = "\u{1B}[H\u{1B}[2J"
                screen += String(
                    format: "Baton demo — %d/%d tasks done, %.0f%%, %.1fs\n\n", done, views.count, progress * 100,
                    (ContinuousClock.now - started).seconds)
                for view in views {
                    let fraction = view.isTerminal ? 1 : (view.progress?.fraction ?? 0)
                    let filled = Int((fraction * 20).rounded())
                    let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: 20 - filled)
                    let owner = view.lease.map { " on \($0.owner.split(separator: "-").last ?? "")" } ?? ""
                    screen += String(
                        format: "%@  %@  %-14@ $%.4f  %@%@\n", view.id, bar, view.status, view.budget.used.costUSD,
                        view.progress?.message ?? "", owner)
                }
                if let killed { screen += "\nkilled \(killed.worker) at \(ISO8601DateFormatter().string(from: killed.at))\n" }
                let waiting = views.filter { $0.status == "waiting" }.count
                screen += "\n\(waiting) outlines waiting for approval; \(approved.count) approved from the CLI"
                for line in approvals.suffix(3) { screen += "\n  $ \(line)" }
                screen += "\n"
                print(screen)
            } else if ContinuousClock.now - lastPlain >= .seconds(2) {
                lastPlain = ContinuousClock.now
                let waiting = views.filter { $0.status == "waiting" }.count
                print(
                    String(
                        format: "%d/%d tasks done, %.0f%% of all documents analysed, %d waiting for approval", done, views.count,
                        progress * 100, waiting))
            }
            if done == views.count { break }
            try await Task.sleep(for: .milliseconds(interactive ? 500 : 250))
        }

        // Summary, from the events (the truth in Redis).
        var retries = 0
        var republished = 0
        var finishers: [String] = []
        for view in views {
            let events = try await client.queries.history(view.id)
            let retrying = events.filter { $0.type == "retrying" }
            let stalled = retrying.filter { $0.data?["reason"]?.stringValue?.hasPrefix("stalled") == true }.count
            republished += stalled
            retries += retrying.count - stalled
            if let killed, let entry = killed.tasks.first(where: { $0.id == view.id }) {
                let next = events.first { event in
                    event.seq > entry.seq && (event.type == "step_committed" || event.type == "succeeded")
                }
                let worker = next?.data?["worker"]?.stringValue ?? "?"
                if worker == killed.worker {
                    // Its commit reached Redis between the look at what it ran and the SIGKILL: nothing to redo.
                    finishers.append("\(entry.id): \(entry.step) at seq \(entry.seq) was committed by \(worker) just before the kill")
                } else {
                    finishers.append("\(entry.id): \(entry.step) at seq \(entry.seq) was redone and committed by \(worker)")
                }
            }
        }
        let succeeded = views.filter { $0.status == "succeeded" }.count
        let steps = views.map(\.budget.used.steps).reduce(0, +)
        let spend = views.map(\.budget.used.costUSD).reduce(0, +)
        let tokens = views.map(\.budget.used.tokens).reduce(0, +)
        print("")
        print("Summary")
        print("  tasks succeeded   \(succeeded)/\(views.count)")
        print("  steps committed   \(steps)")
        print(String(format: "  spend             $%.4f (%d tokens, scripted model stand-in)", spend, tokens))
        print("  approvals         \(approved.count) outlines approved from the CLI (baton approve)")
        print("  retries           \(retries) (step errors)")
        print("  republished       \(republished) (steps of the killed worker whose lease expired)")
        print(String(format: "  wall time         %.1f s", (ContinuousClock.now - started).seconds))
        if let killed {
            print("  killed worker     \(killed.worker) (SIGKILL) was running \(killed.tasks.count) steps:")
            for line in finishers { print("    \(line)") }
        }
        for view in views where view.status != "succeeded" {
            print("  not succeeded: \(view.id) \(view.status) \(view.error?.jsonString ?? "")")
        }
        await client.close()
        if succeeded != views.count { throw BatonError(.internalError, "\(views.count - succeeded) demo tasks did not succeed") }
    }
}
