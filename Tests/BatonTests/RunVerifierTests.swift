import Baton
import BatonExamples
import BatonTesting
import Foundation
import Testing

/// `baton verify`'s checks on synthetic runs, and the effects sink on a real file (fast: no servers).
@Suite("Verify: the run checks and the effects sink")
struct RunVerifierTests {
    static func temporarySink() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("baton-sink-\(UUID().uuidString).effects.jsonl").path
    }

    // MARK: the effects sink

    @Test("the sink applies a key once, replays it after, and fences a new key with an older token")
    func sinkOutcomes() async throws {
        let path = Self.temporarySink()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let sink = EffectsSink(path: path, run: "r1")
        #expect(try await sink.apply(task: "t", step: "s", seq: 1, key: "t#1", token: 1, attempt: 1) == .applied)
        #expect(try await sink.apply(task: "t", step: "s", seq: 1, key: "t#1", token: 2, attempt: 1) == .replayed)
        #expect(try await sink.apply(task: "t", step: "s", seq: 2, key: "t#2", token: 3, attempt: 1) == .applied)
        // A zombie holding token 2 with a key nobody applied yet: refused.
        #expect(try await sink.apply(task: "t", step: "s", seq: 3, key: "t#3", token: 2, attempt: 1) == .fenced)
        // Other tasks have tokens of their own.
        #expect(try await sink.apply(task: "u", step: "s", seq: 1, key: "u#1", token: 1, attempt: 1) == .applied)
        let (entries, malformed) = try EffectsSink.read(path: path)
        #expect(malformed.isEmpty)
        #expect(entries.map(\.outcome) == [.applied, .replayed, .applied, .fenced, .applied])
        #expect(entries.map(\.key) == ["t#1", "t#1", "t#2", "t#3", "u#1"])
        #expect(entries.allSatisfy { $0.run == "r1" && $0.pid == getpid() })
    }

    @Test("two sinks on one file (two processes) see each other's entries: a key applied by one is a replay for the other")
    func sinkSharedBetweenWriters() async throws {
        let path = Self.temporarySink()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = EffectsSink(path: path, run: "r2")
        let second = EffectsSink(path: path, run: "r2")
        #expect(try await first.apply(task: "t", step: "s", seq: 1, key: "t#1", token: 5, attempt: 1) == .applied)
        #expect(try await second.apply(task: "t", step: "s", seq: 1, key: "t#1", token: 6, attempt: 1) == .replayed)
        #expect(try await second.apply(task: "t", step: "s", seq: 2, key: "t#2", token: 7, attempt: 1) == .applied)
        #expect(try await first.apply(task: "t", step: "s", seq: 2, key: "t#2", token: 6, attempt: 2) == .replayed)
        #expect(try await first.apply(task: "t", step: "s", seq: 3, key: "t#3", token: 6, attempt: 2) == .fenced)
        // Concurrent appends from both: every key applied exactly once.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 10..<40 {
                for sink in [first, second] {
                    group.addTask { _ = try await sink.apply(task: "c\(n)", step: "s", seq: 1, key: "c\(n)#1", token: 1, attempt: 1) }
                }
            }
            try await group.waitForAll()
        }
        let entries = try EffectsSink.read(path: path).entries.filter { $0.task.hasPrefix("c") }
        #expect(entries.count == 60)
        #expect(Dictionary(grouping: entries.filter { $0.outcome == .applied }, by: \.key).values.allSatisfy { $0.count == 1 })
        #expect(Set(entries.filter { $0.outcome == .applied }.map(\.key)).count == 30)
    }

    @Test("a run without a sink directory is a clear error naming BATON_EFFECTS_DIR and effects_dir")
    func sinkNeedsADirectory() throws {
        guard ProcessInfo.processInfo.environment[EffectsSink.directoryEnvironment] == nil else { return }
        let error = #expect(throws: BatonError.self) { try EffectsSink.shared(run: "r3", directory: nil) }
        #expect(error?.message.contains("BATON_EFFECTS_DIR") == true)
        #expect(error?.message.contains("effects_dir") == true)
        #expect(throws: BatonError.self) { try EffectsSink.shared(run: "bad run", directory: "/tmp") }
    }

    @Test("in memory: the example agents of a run perform one keyed effect per step; a retried step does not call the sink again")
    func exampleAgentsEffects() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-sinks-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let harness = BatonTestHarness(registry: .examples)
        let run: [String: JSONValue] = ["run": "mem-run", "effects_dir": .string(directory)]
        let chain = try await harness.submit(agent: "stepchain", input: .object(run.merging(["steps": 3, "record_bytes": 8]) { $1 }))
        let flaky = try await harness.submit(agent: "flaky", input: .object(run.merging(["fail_times": 2]) { $1 }))
        let spender = try await harness.submit(agent: "spender", input: .object(run.merging(["steps": 2]) { $1 }))
        let plain = try await harness.submit(agent: "stepchain", input: ["steps": 2, "record_bytes": 8])
        await harness.runUntilIdle()
        for id in [chain, flaky, spender, plain] { #expect(harness.task(id)?.status == "succeeded") }
        let entries = try EffectsSink.read(path: EffectsSink.path(directory: directory, run: "mem-run")).entries
        #expect(entries.allSatisfy { $0.outcome == .applied && $0.run == "mem-run" })
        #expect(entries.filter { $0.task == chain }.map(\.key) == ["\(chain)#1", "\(chain)#2", "\(chain)#3"])
        #expect(entries.filter { $0.task == chain }.map(\.token) == [1, 2, 3])
        // Three attempts of one step: the effect ran once (the retries found it recorded).
        #expect(entries.filter { $0.task == flaky }.map(\.key) == ["\(flaky)#1"])
        #expect(entries.filter { $0.task == spender }.count == 3)
        #expect(!entries.contains { $0.task == plain })
    }

    // MARK: the checks

    /// A stepchain of `steps` steps that ran cleanly: one claim (token n) per step, each charging 7 tokens and
    /// 250 micro-dollars, one applied effect per step.
    static func cleanRun(steps: Int64 = 3, run: String = "run-a", id: String = "task-a") -> RunSnapshot {
        var events = [TaskEvent(id: "0-1", type: "submitted", seq: 0, branch: 0, step: "append", at: "", data: [:])]
        var effects: [EffectEntry] = []
        for n in 1...steps {
            let charged: JSONValue = ["cost": 250, "tokens": 7, "tool_calls": 0, "steps": 1]
            events.append(
                TaskEvent(
                    id: "0-\(n + 1)", type: n == steps ? "succeeded" : "step_committed", seq: n, branch: 0, step: "append", at: "",
                    data: ["worker": "w", "fence": .int(n), "charged": charged]))
            effects.append(
                EffectEntry(run: run, task: id, step: "append", seq: n, key: "\(id)#\(n)", token: n, attempt: 1, outcome: .applied))
        }
        let input: JSONValue = ["steps": .int(steps), "tokens_per_step": 7, "run": .string(run)]
        let record = RunSnapshot.TaskRecord(
            id: id,
            fields: [
                "id": id, "agent": "stepchain", "status": "succeeded", "seq": String(steps), "fence": String(steps), "branch": "0",
                "input": input.jsonString, "result": "{\"records\":\(steps)}",
            ],
            budget: [
                "cost": String(250 * steps), "tokens": String(7 * steps), "tool_calls": "0", "steps": String(steps), "max_steps": "10000",
            ],
            events: events, checkpoint: ["records": .array((1...steps).map { .string("\($0):xx") })])
        return RunSnapshot(run: run, nowMilliseconds: 1_000_000, roots: [id], tasks: [id: record], effects: effects)
    }

    static func kinds(_ report: RunReport) -> [String] { report.violations.map(\.kind) }

    @Test("a clean run passes with zeros")
    func cleanRunPasses() {
        let report = RunVerifier.verify(Self.cleanRun())
        #expect(report.violations == [])
        #expect(report.passed)
        #expect(report.submitted == 1 && report.succeeded == 1 && report.lost == 0 && report.duplicateEffects == 0)
        #expect(report.effectsApplied == 3)
        #expect(report.figures.contains("lost 0 / duplicate-effects 0 / stale-writes 0 / budget-mismatch 0"))
    }

    @Test("an effect applied twice is a duplicate effect; a replay is not")
    func duplicateEffect() {
        var snapshot = Self.cleanRun()
        var replay = snapshot.effects[1]
        replay.outcome = .replayed
        snapshot.effects.append(replay)
        #expect(RunVerifier.verify(snapshot).passed)
        snapshot.effects.append(snapshot.effects[1])
        let report = RunVerifier.verify(snapshot)
        #expect(report.duplicateEffects == 1)
        #expect(report.violations.contains { $0.task == "task-a" && $0.kind == "duplicate_effect" && $0.message.contains("task-a#2") })
    }

    @Test("a committed step without an applied effect, and an effect of a task outside the run, are named")
    func missingAndUnexpectedEffects() {
        var snapshot = Self.cleanRun()
        snapshot.effects.remove(at: 2)
        snapshot.effects.append(
            EffectEntry(run: "run-a", task: "intruder", step: "s", seq: 1, key: "intruder#1", token: 1, attempt: 1, outcome: .applied))
        let report = RunVerifier.verify(snapshot)
        #expect(report.violations.contains { $0.task == "task-a" && $0.kind == "missing_effect" && $0.message.contains("3") })
        #expect(report.violations.contains { $0.task == "intruder" && $0.kind == "unexpected_effect" })
    }

    @Test("stale writes: a commit by an older token, an effect applied with a token older than one seen or than its predecessor's commit")
    func staleWrites() {
        var commit = Self.cleanRun()
        commit.tasks["task-a"]?.events.append(
            TaskEvent(
                id: "0-9", type: "step_committed", seq: 3, branch: 0, step: "append", at: "", data: ["fence": 1, "charged": ["steps": 0]]))
        var report = RunVerifier.verify(commit)
        #expect(report.staleWrites == 1)
        #expect(report.violations.contains { $0.kind == "stale_write" && $0.message.contains("token 1 after token 3") })

        var effect = Self.cleanRun()
        effect.effects[2].token = 1
        report = RunVerifier.verify(effect)
        #expect(report.staleWrites == 1)
        #expect(report.violations.contains { $0.kind == "stale_write" && $0.message.contains("task-a#3") })

        // Token 2 applied the effect of seq 3, but token 2 had committed seq 2: that writer's lease was over.
        var predecessor = Self.cleanRun()
        predecessor.effects[1].token = 1
        predecessor.effects[2].token = 2
        report = RunVerifier.verify(predecessor)
        #expect(report.violations.contains { $0.kind == "stale_write" && $0.message.contains("committed seq 2") })
    }

    @Test("consecutive commits under one token (a worker's speculative steps) pass; a token below an earlier commit's does not")
    func speculativeCommitsShareTheirClaimsToken() {
        func run(fences: [Int64]) -> RunSnapshot {
            var snapshot = Self.cleanRun()
            snapshot.effects = []  // steps without effects (the ones that run speculatively)
            var record = snapshot.tasks["task-a"]!
            record.fields["input"] = (["steps": 3, "tokens_per_step": 7] as JSONValue).jsonString
            record.fields["fence"] = String(fences.max() ?? 0)
            for (index, fence) in fences.enumerated() {
                record.events[index + 1].data = [
                    "worker": "w", "fence": .int(fence), "charged": ["cost": 250, "tokens": 7, "tool_calls": 0, "steps": 1],
                ]
            }
            snapshot.tasks["task-a"] = record
            return snapshot
        }
        let shared = RunVerifier.verify(run(fences: [1, 1, 1]))
        #expect(shared.violations == [])
        let claimedAgain = RunVerifier.verify(run(fences: [1, 2, 2]))
        #expect(claimedAgain.violations == [])
        let stale = RunVerifier.verify(run(fences: [1, 2, 1]))
        #expect(stale.staleWrites == 1)
        #expect(stale.violations.contains { $0.kind == "stale_write" && $0.message.contains("token 1 after token 2") })
    }

    @Test("a budget counter off by one is a budget mismatch; a counter far over its cap is named")
    func budgetMismatch() {
        var snapshot = Self.cleanRun()
        snapshot.tasks["task-a"]?.budget["tokens"] = "22"
        var report = RunVerifier.verify(snapshot)
        #expect(report.budgetMismatch == 1)
        #expect(
            report.violations.contains {
                $0.kind == "budget_mismatch" && $0.message.contains("'tokens' is 22") && $0.message.contains("21")
            })

        snapshot = Self.cleanRun()
        snapshot.tasks["task-a"]?.budget["max_tokens"] = "10"
        report = RunVerifier.verify(snapshot)
        #expect(report.violations.contains { $0.kind == "over_cap" && $0.message.contains("'tokens' is 21") })
        // One step's charges over is the documented rule: limit 14 (two steps), the third step crossed it.
        snapshot.tasks["task-a"]?.budget["max_tokens"] = "14"
        #expect(!Self.kinds(RunVerifier.verify(snapshot)).contains("over_cap"))
    }

    @Test("a task left running under an expired lease, or queued, is lost; an unpublished outbox is named")
    func lostTasks() {
        var snapshot = Self.cleanRun()
        snapshot.tasks["task-a"]?.fields["status"] = "running"
        snapshot.tasks["task-a"]?.fields["lease_until"] = "999000"
        snapshot.tasks["task-a"]?.fields["lease_owner"] = "ghost"
        snapshot.tasks["task-a"]?.outbox = 1
        let report = RunVerifier.verify(snapshot)
        #expect(report.lost == 1)
        #expect(Set(Self.kinds(report)) == ["lost", "lease_expired", "outbox"])
        var missing = Self.cleanRun()
        missing.roots.append("never-stored")
        #expect(RunVerifier.verify(missing).violations.contains { $0.task == "never-stored" && $0.kind == "lost" })
    }

    @Test("history and checkpoint: a step committed twice, a missing commit, a record out of order")
    func historyChecks() {
        var snapshot = Self.cleanRun()
        let second = snapshot.tasks["task-a"]!.events[2]
        snapshot.tasks["task-a"]?.events.insert(second, at: 3)
        snapshot.tasks["task-a"]?.events[3].data = ["fence": 9, "charged": ["steps": 1]]
        var report = RunVerifier.verify(snapshot)
        #expect(report.violations.contains { $0.kind == "duplicate_step" && $0.message.contains("seq 2") })

        snapshot = Self.cleanRun()
        snapshot.tasks["task-a"]?.checkpoint = ["records": ["1:xx", "1:xx", "3:xx"]]
        report = RunVerifier.verify(snapshot)
        #expect(report.violations.contains { $0.kind == "record" })
    }

    @Test("agents: a flaky task that should have succeeded, a spender that should have stopped, a dead letter unaccounted for")
    func agentConsistency() {
        let flakyInput: JSONValue = ["fail_times": 1]
        let flaky = RunSnapshot.TaskRecord(
            id: "f", fields: ["agent": "flaky", "status": "dead_lettered", "seq": "0", "fence": "5", "input": flakyInput.jsonString],
            budget: ["max_attempts": "5"],
            events: [TaskEvent(id: "0-1", type: "submitted", seq: 0, branch: 0, step: "call", at: "", data: [:])])
        let spender = RunSnapshot.TaskRecord(
            id: "s", fields: ["agent": "spender", "status": "succeeded", "seq": "1", "fence": "1", "input": "{}"],
            events: [TaskEvent(id: "0-1", type: "submitted", seq: 0, branch: 0, step: "spend", at: "", data: [:])], checkpoint: [:])
        let snapshot = RunSnapshot(
            run: "r", nowMilliseconds: 0, roots: ["f", "s"], tasks: ["f": flaky, "s": spender],
            deadLetters: [.init(id: "d1", taskID: "s", reason: "stale_seq")])
        let report = RunVerifier.verify(snapshot)
        #expect(report.violations.contains { $0.task == "f" && $0.kind == "inconsistent" && $0.message.contains("expected succeeded") })
        #expect(report.violations.contains { $0.task == "f" && $0.kind == "dead_letter" && $0.message.contains("no dead letter") })
        #expect(report.violations.contains { $0.task == "s" && $0.kind == "inconsistent" && $0.message.contains("budget_exceeded") })
        #expect(report.violations.contains { $0.task == "s" && $0.kind == "dead_letter" && $0.message.contains("d1") })
    }

    @Test("the JSON report names the figures of the issue")
    func jsonReport() throws {
        let report = RunVerifier.verify(Self.cleanRun())
        let json = try JSONValue.parse(Array(try JSONEncoder().encode(report)))
        for key in [
            "submitted", "succeeded", "dead_lettered", "budget_exceeded", "cancelled", "lost", "duplicate_effects", "stale_writes",
            "budget_mismatch",
        ] {
            #expect(json[key]?.intValue != nil, "missing \(key)")
        }
        #expect(json["passed"] == .bool(true))
        let decoded = try JSONDecoder().decode(RunReport.self, from: try JSONEncoder().encode(report))
        #expect(decoded.submitted == 1)
    }
}

extension RunVerifierTests {
    @Test("a tenant's day counter over its limit by more than one charge is named; one charge over is the rule")
    func tenantCap() {
        var snapshot = Self.cleanRun()
        snapshot.tasks["task-a"]?.fields["tenant"] = "acme"
        let limits = TenantBudgets.Limits(maxCostMicrosPerDay: 600, maxTokensPerDay: 100)
        snapshot.tenantDays = [.init(tenant: "acme", day: "2026-11-23", costMicros: 750, tokens: 21, limits: limits)]
        #expect(RunVerifier.verify(snapshot).passed)
        snapshot.tenantDays[0].costMicros = 851
        let report = RunVerifier.verify(snapshot)
        #expect(report.violations.map(\.task) == ["tenant:acme"])
        #expect(report.violations.first?.message.contains("cost on 2026-11-23 is 851") == true)
    }
}

extension RunVerifierTests {
    @Test("in memory as on Redis: commit events carry the lease's token and what the commit counted")
    func inMemoryCommitCounts() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "stepchain", input: ["steps": 2, "record_bytes": 8, "tokens_per_step": 5])
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        let commits = task.events.filter { $0.data["fence"] != nil }
        #expect(commits.map(\.type) == ["step_committed", "succeeded"])
        #expect(commits.map { $0.data["fence"]?.intValue } == [1, 2])
        #expect(commits.map { $0.data["charged"]?["tokens"]?.intValue } == [5, 5])
        #expect(commits.map { $0.data["charged"]?["steps"]?.intValue } == [1, 1])
        #expect(commits.first?.data["worker"] != nil)
    }
}
