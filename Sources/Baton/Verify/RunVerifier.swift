import Foundation

/// What `baton verify` reads of one run: the run's tasks as Redis holds them and the run's effects sink.
/// Built by ``TaskQueries/runSnapshot(run:effectsPath:)``; tests build it by hand.
public struct RunSnapshot: Sendable {
    public var run: String
    /// Redis server time when the snapshot was taken (Unix ms).
    public var nowMilliseconds: Int64
    /// The ids in the run's index (`baton:run:{id}`): the submitted root tasks.
    public var roots: [String]
    /// Every task found: the roots and their descendants, by id.
    public var tasks: [String: TaskRecord]
    /// The entries of the run's effects sink, in file order.
    public var effects: [EffectEntry]
    /// Lines of the sink that are not entries.
    public var malformedEffectLines: [Int]
    /// The dead letters (taken into Redis) that name a task of the run.
    public var deadLetters: [DeadLetterRef]
    /// The daily counters of the run's tenants that have limits (the days its tasks were active).
    public var tenantDays: [TenantDay] = []

    public init(
        run: String, nowMilliseconds: Int64, roots: [String], tasks: [String: TaskRecord], effects: [EffectEntry] = [],
        malformedEffectLines: [Int] = [], deadLetters: [DeadLetterRef] = []
    ) {
        self.run = run
        self.nowMilliseconds = nowMilliseconds
        self.roots = roots
        self.tasks = tasks
        self.effects = effects
        self.malformedEffectLines = malformedEffectLines
        self.deadLetters = deadLetters
    }

    /// One task: its hashes, history, latest checkpoint and outbox size.
    public struct TaskRecord: Sendable {
        public var id: String
        /// The task hash (`baton:{T}:task`).
        public var fields: [String: String]
        /// The budget hash (limits and counters).
        public var budget: [String: String]
        public var events: [TaskEvent]
        /// The checkpoint at the task's seq (nil when it is missing).
        public var checkpoint: JSONValue?
        /// Messages committed and not yet published.
        public var outbox: Int
        /// The ids of its children (`<id>/<n>`).
        public var children: [String]

        public init(
            id: String, fields: [String: String], budget: [String: String] = [:], events: [TaskEvent] = [], checkpoint: JSONValue? = nil,
            outbox: Int = 0, children: [String] = []
        ) {
            self.id = id
            self.fields = fields
            self.budget = budget
            self.events = events
            self.checkpoint = checkpoint
            self.outbox = outbox
            self.children = children
        }
    }

    /// One tenant's counters of one UTC day, with its daily limits.
    public struct TenantDay: Sendable, Hashable {
        public var tenant: String
        public var day: String
        public var costMicros: Int64
        public var tokens: Int64
        public var limits: TenantBudgets.Limits
        public init(tenant: String, day: String, costMicros: Int64, tokens: Int64, limits: TenantBudgets.Limits) {
            self.tenant = tenant
            self.day = day
            self.costMicros = costMicros
            self.tokens = tokens
            self.limits = limits
        }
    }

    public struct DeadLetterRef: Sendable, Hashable {
        public var id: String
        public var taskID: String
        public var reason: String
        public init(id: String, taskID: String, reason: String) {
            self.id = id
            self.taskID = taskID
            self.reason = reason
        }
    }
}

/// The result of `baton verify`: the figures and every violation found.
public struct RunReport: Codable, Sendable {
    public struct Violation: Codable, Sendable, Hashable {
        /// The task (or `-` for the run as a whole).
        public var task: String
        /// `lost`, `lease_expired`, `outbox`, `duplicate_effect`, `missing_effect`, `unexpected_effect`, `stale_write`,
        /// `budget_mismatch`, `over_cap`, `seq_mismatch`, `duplicate_step`, `record`, `checkpoint`, `inconsistent`,
        /// `dead_letter`, `sink`.
        public var kind: String
        public var message: String
        public init(task: String, kind: String, message: String) {
            self.task = task
            self.kind = kind
            self.message = message
        }
    }

    public var run: String
    public var submitted = 0
    /// Of them: children started by the run's tasks.
    public var children = 0
    public var succeeded = 0
    public var deadLettered = 0
    public var budgetExceeded = 0
    public var cancelled = 0
    public var failed = 0
    /// Tasks not found in Redis, or not in a terminal status.
    public var lost = 0
    /// Effect keys applied more than once (each extra application counts).
    public var duplicateEffects = 0
    public var staleWrites = 0
    public var budgetMismatch = 0
    /// Effects applied, and attempts the sink answered as replays (expected after crashes: not violations).
    public var effectsApplied = 0
    public var effectsReplayed = 0
    public var effectsFenced = 0
    /// Tasks whose history was capped before its start (the history checks were skipped for them).
    public var historyTruncated = 0
    public var violations: [Violation] = []

    public var passed: Bool { violations.isEmpty }

    public init(run: String) { self.run = run }

    enum CodingKeys: String, CodingKey {
        case run, submitted, children, succeeded, cancelled, failed, lost, violations, passed
        case deadLettered = "dead_lettered"
        case budgetExceeded = "budget_exceeded"
        case duplicateEffects = "duplicate_effects"
        case staleWrites = "stale_writes"
        case budgetMismatch = "budget_mismatch"
        case effectsApplied = "effects_applied"
        case effectsReplayed = "effects_replayed"
        case effectsFenced = "effects_fenced"
        case historyTruncated = "history_truncated"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(run, forKey: .run)
        try c.encode(passed, forKey: .passed)
        try c.encode(submitted, forKey: .submitted)
        try c.encode(children, forKey: .children)
        try c.encode(succeeded, forKey: .succeeded)
        try c.encode(deadLettered, forKey: .deadLettered)
        try c.encode(budgetExceeded, forKey: .budgetExceeded)
        try c.encode(cancelled, forKey: .cancelled)
        try c.encode(failed, forKey: .failed)
        try c.encode(lost, forKey: .lost)
        try c.encode(duplicateEffects, forKey: .duplicateEffects)
        try c.encode(staleWrites, forKey: .staleWrites)
        try c.encode(budgetMismatch, forKey: .budgetMismatch)
        try c.encode(effectsApplied, forKey: .effectsApplied)
        try c.encode(effectsReplayed, forKey: .effectsReplayed)
        try c.encode(effectsFenced, forKey: .effectsFenced)
        try c.encode(historyTruncated, forKey: .historyTruncated)
        try c.encode(violations, forKey: .violations)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        run = try c.decode(String.self, forKey: .run)
        submitted = try c.decode(Int.self, forKey: .submitted)
        children = try c.decode(Int.self, forKey: .children)
        succeeded = try c.decode(Int.self, forKey: .succeeded)
        deadLettered = try c.decode(Int.self, forKey: .deadLettered)
        budgetExceeded = try c.decode(Int.self, forKey: .budgetExceeded)
        cancelled = try c.decode(Int.self, forKey: .cancelled)
        failed = try c.decode(Int.self, forKey: .failed)
        lost = try c.decode(Int.self, forKey: .lost)
        duplicateEffects = try c.decode(Int.self, forKey: .duplicateEffects)
        staleWrites = try c.decode(Int.self, forKey: .staleWrites)
        budgetMismatch = try c.decode(Int.self, forKey: .budgetMismatch)
        effectsApplied = try c.decode(Int.self, forKey: .effectsApplied)
        effectsReplayed = try c.decode(Int.self, forKey: .effectsReplayed)
        effectsFenced = try c.decode(Int.self, forKey: .effectsFenced)
        historyTruncated = try c.decode(Int.self, forKey: .historyTruncated)
        violations = try c.decode([Violation].self, forKey: .violations)
    }

    /// The one-line figures: `submitted / succeeded / dead-lettered / budget_exceeded / cancelled / lost /
    /// duplicate-effects / stale-writes / budget-mismatch`.
    public var figures: String {
        "submitted \(submitted) (\(children) children) / succeeded \(succeeded) / dead-lettered \(deadLettered) / budget_exceeded \(budgetExceeded)"
            + " / cancelled \(cancelled) / failed \(failed) / lost \(lost) / duplicate-effects \(duplicateEffects)"
            + " / stale-writes \(staleWrites) / budget-mismatch \(budgetMismatch)"
    }
}

/// The end-of-run checks of `baton verify` (docs/reliability.md): pure functions of a ``RunSnapshot``.
public enum RunVerifier {
    static let terminal: Set<String> = ["succeeded", "failed", "cancelled", "budget_exceeded", "dead_lettered"]

    /// What one commit event says (the commit script adds `fence` and `charged` to its data).
    struct Commit {
        var seq: Int64
        var branch: Int64
        var fence: Int64
        var cost: Int64
        var tokens: Int64
        var toolCalls: Int64
        var steps: Int64
        var type: String
    }

    static func commits(_ events: [TaskEvent]) -> [Commit] {
        events.compactMap { event in
            guard let data = event.data, let fence = data["fence"]?.intValue, let charged = data["charged"] else { return nil }
            return Commit(
                seq: event.seq, branch: event.branch, fence: fence, cost: charged["cost"]?.intValue ?? 0,
                tokens: charged["tokens"]?.intValue ?? 0, toolCalls: charged["tool_calls"]?.intValue ?? 0,
                steps: charged["steps"]?.intValue ?? 0, type: event.type)
        }
    }

    /// Checks every task of the run.
    public static func verify(_ snapshot: RunSnapshot) -> RunReport {
        var report = RunReport(run: snapshot.run)
        func violation(_ task: String, _ kind: String, _ message: String) {
            report.violations.append(.init(task: task, kind: kind, message: message))
        }
        let rootSet = Set(snapshot.roots)
        // Every task reachable from the roots.
        var ids: [String] = []
        var seen = Set<String>()
        var stack = snapshot.roots.sorted().reversed().map { $0 }
        while let id = stack.popLast() {
            guard seen.insert(id).inserted else { continue }
            ids.append(id)
            if let record = snapshot.tasks[id] { stack.append(contentsOf: record.children.reversed()) }
        }
        report.submitted = ids.count
        report.children = ids.filter { !rootSet.contains($0) }.count

        var effectsByTask: [String: [EffectEntry]] = [:]
        for entry in snapshot.effects { effectsByTask[entry.task, default: []].append(entry) }
        for line in snapshot.malformedEffectLines { violation("-", "sink", "line \(line) of the effects sink is not an effect entry") }
        for task in effectsByTask.keys.sorted() where !seen.contains(task) {
            violation(task, "unexpected_effect", "the effects sink has entries for a task that is not part of run \(snapshot.run)")
        }
        var lettersByTask: [String: [RunSnapshot.DeadLetterRef]] = [:]
        for letter in snapshot.deadLetters { lettersByTask[letter.taskID, default: []].append(letter) }

        // Own committed charges per task (from its commit events), for the parents' sums.
        var ownSums: [String: [Int64]] = [:]
        var maxCharge: [String: [Int64]] = [:]
        var truncated = Set<String>()
        for id in ids {
            guard let record = snapshot.tasks[id] else { continue }
            if record.events.first?.type != "submitted" { truncated.insert(id) }
            var sums: [Int64] = [0, 0, 0, 0]
            var maxima: [Int64] = [0, 0, 0, 0]
            for commit in commits(record.events) {
                let values = [commit.cost, commit.tokens, commit.toolCalls, commit.steps]
                for i in 0..<4 {
                    sums[i] += values[i]
                    maxima[i] = max(maxima[i], values[i])
                }
            }
            ownSums[id] = sums
            maxCharge[id] = maxima
        }
        func descendants(_ id: String) -> [String] {
            var out: [String] = []
            var stack = snapshot.tasks[id]?.children ?? []
            while let child = stack.popLast() {
                out.append(child)
                stack.append(contentsOf: snapshot.tasks[child]?.children ?? [])
            }
            return out
        }

        for id in ids {
            guard let record = snapshot.tasks[id] else {
                report.lost += 1
                violation(id, "lost", "submitted to run \(snapshot.run) but not in Redis")
                continue
            }
            let f = record.fields
            let status = f["status"] ?? ""
            let seq = Int64(f["seq"] ?? "") ?? 0
            let fence = Int64(f["fence"] ?? "") ?? 0
            switch status {
            case "succeeded": report.succeeded += 1
            case "dead_lettered": report.deadLettered += 1
            case "budget_exceeded": report.budgetExceeded += 1
            case "cancelled": report.cancelled += 1
            case "failed": report.failed += 1
            default:
                report.lost += 1
                violation(id, "lost", "not finished: status '\(status)' at seq \(seq) (step \(f["step"] ?? "?"))")
            }
            if status == "running", let until = Int64(f["lease_until"] ?? ""), until < snapshot.nowMilliseconds {
                violation(
                    id, "lease_expired",
                    "running under an expired lease (held by '\(f["lease_owner"] ?? "")', expired \(snapshot.nowMilliseconds - until) ms ago)"
                )
            }
            if record.outbox > 0 {
                violation(id, "outbox", "\(record.outbox) message(s) committed but never published (left in its outbox)")
            }
            if seq > 0, record.checkpoint == nil {
                violation(id, "checkpoint", "no checkpoint at its seq \(seq)")
            }

            // History: the commits, each seq once per branch, tokens never falling. (A worker's speculative steps commit
            // under the token of its last claim, so consecutive commits may share one; the commit script accepts the same
            // token only while no other claim happened, and a stale writer's token is below a later commit's.)
            let commits = commits(record.events)
            let historyComplete = !truncated.contains(id)
            if !historyComplete { report.historyTruncated += 1 }
            if historyComplete {
                var lastByBranch: [Int64: Int64] = [:]
                var committed = Set<Int64>()
                var maxFence: Int64 = 0
                for commit in commits {
                    if commit.fence < maxFence {
                        report.staleWrites += 1
                        violation(
                            id, "stale_write",
                            "the \(commit.type) commit at seq \(commit.seq) was made with fencing token \(commit.fence) after token \(maxFence) had committed"
                        )
                    }
                    if commit.fence > fence {
                        report.staleWrites += 1
                        violation(id, "stale_write", "a commit names fencing token \(commit.fence), above the task's last token \(fence)")
                    }
                    maxFence = max(maxFence, commit.fence)
                    guard commit.steps > 0 else { continue }
                    if let last = lastByBranch[commit.branch] {
                        if commit.seq <= last {
                            violation(
                                id, "duplicate_step", "seq \(commit.seq) committed again on branch \(commit.branch) (after seq \(last))")
                        } else if commit.seq != last + 1 {
                            violation(id, "seq_mismatch", "commits jump from seq \(last) to \(commit.seq) on branch \(commit.branch)")
                        }
                    }
                    lastByBranch[commit.branch] = commit.seq
                    committed.insert(commit.seq)
                }
                let expected = Set(seq > 0 ? Array(1...seq) : [])
                if committed != expected {
                    let missing = expected.subtracting(committed).sorted()
                    let extra = committed.subtracting(expected).sorted()
                    violation(
                        id, "seq_mismatch",
                        "checkpoint seq is \(seq) but the history commits \(committed.count) step(s)"
                            + (missing.isEmpty ? "" : "; never committed: \(missing.prefix(10).map(String.init).joined(separator: ","))")
                            + (extra.isEmpty ? "" : "; beyond it: \(extra.prefix(10).map(String.init).joined(separator: ","))"))
                }
            }

            // Budget: counters = own committed charges + every descendant's; never over a cap beyond one step's charges
            // per task (the task itself and each descendant that may have had a step in flight).
            let family = [id] + descendants(id)
            if family.allSatisfy({ !truncated.contains($0) && snapshot.tasks[$0] != nil }) {
                let names = ["cost", "tokens", "tool_calls", "steps"]
                var mismatched = false
                for (i, name) in names.enumerated() {
                    let expected = family.reduce(Int64(0)) { $0 + (ownSums[$1]?[i] ?? 0) }
                    let counter = Int64(record.budget[name] ?? "") ?? 0
                    if counter != expected {
                        mismatched = true
                        violation(id, "budget_mismatch", "counter '\(name)' is \(counter) but its committed charges sum to \(expected)")
                    }
                    let limitName = name == "cost" ? "max_cost" : "max_" + name
                    if let limit = Int64(record.budget[limitName] ?? "") {
                        let overshoot = family.reduce(Int64(0)) { $0 + (maxCharge[$1]?[i] ?? 0) }
                        if counter > limit + overshoot {
                            violation(
                                id, "over_cap",
                                "counter '\(name)' is \(counter), over its limit \(limit) by more than one step's charges (\(overshoot))")
                        }
                    }
                }
                if mismatched { report.budgetMismatch += 1 }
            }

            // Effects: each key applied once, no stale token applied, every committed step's effect applied.
            let entries = effectsByTask[id] ?? []
            let input = f["input"].flatMap { try? JSONValue.parse(Array($0.utf8)) } ?? .null
            var appliedKeys: [String: Int] = [:]
            var maxToken: Int64 = 0
            var commitFence: [Int64: Int64] = [:]
            // The first commit of each seq (a fork commits a seq again on a later branch, after the effects of the
            // first path were applied): an effect of seq n must come from a lease newer than the first commit of n-1.
            for commit in commits where commit.steps > 0 { commitFence[commit.seq] = min(commitFence[commit.seq] ?? .max, commit.fence) }
            for entry in entries {
                switch entry.outcome {
                case .applied:
                    report.effectsApplied += 1
                    appliedKeys[entry.key, default: 0] += 1
                    if let count = appliedKeys[entry.key], count > 1 {
                        // A second application is the violation (whatever its token).
                        report.duplicateEffects += 1
                        violation(id, "duplicate_effect", "effect '\(entry.key)' applied \(count) times")
                    } else if entry.token < maxToken {
                        report.staleWrites += 1
                        violation(
                            id, "stale_write",
                            "effect '\(entry.key)' applied with fencing token \(entry.token) after the sink had seen token \(maxToken)")
                    } else if let previous = commitFence[entry.seq - 1], entry.token <= previous {
                        report.staleWrites += 1
                        violation(
                            id, "stale_write",
                            "effect '\(entry.key)' of seq \(entry.seq) applied with fencing token \(entry.token), not newer than the token \(previous) that committed seq \(entry.seq - 1)"
                        )
                    }
                    if entry.seq > seq + 1 {
                        violation(
                            id, "unexpected_effect", "effect '\(entry.key)' of seq \(entry.seq) applied, but the task is at seq \(seq)")
                    }
                case .replayed: report.effectsReplayed += 1
                case .fenced: report.effectsFenced += 1
                }
                maxToken = max(maxToken, entry.token)
            }
            if input["run"]?.stringValue == snapshot.run, seq > 0 {
                let missing = (1...seq).filter { appliedKeys["\(id)#\($0)"] == nil }
                if !missing.isEmpty {
                    violation(
                        id, "missing_effect",
                        "committed step(s) \(missing.prefix(10).map(String.init).joined(separator: ",")) have no applied effect in the sink"
                    )
                }
            }

            // Dead letters: a dead-lettered task has one with its reason; no other task has one.
            let letters = lettersByTask[id] ?? []
            if status == "dead_lettered" {
                if letters.isEmpty {
                    violation(id, "dead_letter", "dead-lettered, but no dead letter names it (not taken in from baton.dead)")
                }
                for letter in letters where letter.reason.isEmpty {
                    violation(id, "dead_letter", "dead letter \(letter.id) has no reason")
                }
            } else {
                for letter in letters {
                    violation(id, "dead_letter", "dead letter \(letter.id) (\(letter.reason)) names it, but the task is \(status)")
                }
            }

            if terminal.contains(status) {
                for problem in agentProblems(record, input: input, status: status, seq: seq, letters: letters, snapshot: snapshot) {
                    violation(id, problem.kind, problem.message)
                }
            }
        }
        // Tenants' daily counters: at most one charge over the limit (a charge is admitted below it). A charge is at
        // most one commit's charges, so the largest commit of the tenant's tasks bounds it.
        for day in snapshot.tenantDays {
            let tenantTasks = ids.filter { snapshot.tasks[$0]?.fields["tenant"] == day.tenant }
            let maxCost = tenantTasks.map { maxCharge[$0]?[0] ?? 0 }.max() ?? 0
            let maxTokens = tenantTasks.map { maxCharge[$0]?[1] ?? 0 }.max() ?? 0
            if let limit = day.limits.maxCostMicrosPerDay, day.costMicros > limit + maxCost {
                violation(
                    "tenant:\(day.tenant)", "over_cap",
                    "cost on \(day.day) is \(day.costMicros) micro-dollars, over the daily limit \(limit) by more than one charge (\(maxCost))"
                )
            }
            if let limit = day.limits.maxTokensPerDay, day.tokens > limit + maxTokens {
                violation(
                    "tenant:\(day.tenant)", "over_cap",
                    "tokens on \(day.day) are \(day.tokens), over the daily limit \(limit) by more than one charge (\(maxTokens))")
            }
        }
        return report
    }

    /// After the run, its step queues (`baton.steps.<name>`, given by the caller: only a run on queues of its own can
    /// tell) hold nothing: a message left there once every task ended is an orphaned step message.
    public static func checkQueues(_ rows: [QueueReport.Row], into report: inout RunReport) {
        for row in rows {
            if !row.exists {
                report.violations.append(.init(task: "-", kind: "queue", message: "queue \(row.queue) does not exist"))
                continue
            }
            let ready = row.ready ?? 0
            let unacked = row.unacked ?? 0
            if ready + unacked > 0 {
                report.violations.append(
                    .init(
                        task: "-", kind: "orphaned_message",
                        message: "queue \(row.queue) still holds \(ready) ready and \(unacked) unacked step message(s) after the run"))
            }
        }
    }

    /// The step queues `baton.steps.<name>` by passive `queue.declare` (exact ready counts; `rabbitmqctl`'s figures
    /// for quorum queues lag by seconds).
    public static func inspectQueues(_ queues: [String], amqpURL: String) async throws -> [QueueReport.Row] {
        try await QueueReport.inspect(queues.map { (Topology.stepsQueue($0), "steps") }, amqpURL: amqpURL)
    }

    /// Checks of a terminal task against what its agent and input promise.
    static func agentProblems(
        _ record: RunSnapshot.TaskRecord, input: JSONValue, status: String, seq: Int64, letters: [RunSnapshot.DeadLetterRef],
        snapshot: RunSnapshot
    ) -> [(kind: String, message: String)] {
        var problems: [(kind: String, message: String)] = []
        func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
            if !condition { problems.append(("inconsistent", message())) }
        }
        // A limit or a cancel may stop any task; what else it may end in depends on its agent.
        if status == "cancelled" { return problems }
        let agent = record.fields["agent"] ?? ""
        let result = record.fields["result"].flatMap { try? JSONValue.parse(Array($0.utf8)) } ?? .null
        let ended = "\(agent) ended \(status) at seq \(seq)"
        switch agent {
        case "stepchain":
            let steps = input["steps"]?.intValue ?? 20
            if status == "succeeded" {
                expect(seq == steps, "\(ended), expected \(steps) steps")
                expect(
                    result["records"]?.intValue == steps, "stepchain result records \(result["records"]?.jsonString ?? "nil") ≠ \(steps)")
            } else {
                expect(status == "budget_exceeded", "\(ended): a stepchain ends succeeded (or budget_exceeded, cancelled)")
            }
            if let records = record.checkpoint?["records"]?.arrayValue {
                let numbers = records.map { Int64($0.stringValue?.prefix { $0 != ":" } ?? "") ?? -1 }
                if numbers != (0..<Int64(records.count)).map({ $0 + 1 }) || Int64(records.count) != seq {
                    problems.append(
                        (
                            "record",
                            "checkpoint records are \(numbers.prefix(20).map(String.init).joined(separator: ",")) at seq \(seq): each step's record must appear once, in order"
                        ))
                }
            }
        case "flaky":
            let maxAttempts = Int64(record.budget["max_attempts"] ?? "") ?? 5
            let failTimes = input["fail_times"]?.intValue ?? 2
            let reasons = Set(letters.map(\.reason))
            if status == "budget_exceeded" { break }
            if (Int64(record.fields["branch"] ?? "") ?? 0) > 0 {
                // Redriven (or forked): a flaky task on a later branch stands for "the provider recovered".
                expect(
                    status == "succeeded",
                    "\(ended) on branch \(record.fields["branch"] ?? "?"), expected succeeded (a redriven flaky succeeds)")
                break
            }
            if input["permanent"] == .bool(true) {
                expect(status == "dead_lettered", "\(ended), expected dead_lettered (permanent error)")
                expect(letters.isEmpty || reasons.contains("permanent_error"), "flaky (permanent) dead letter reasons \(reasons.sorted())")
            } else if failTimes < maxAttempts {
                expect(status == "succeeded", "\(ended), expected succeeded (fail_times \(failTimes) < max_attempts \(maxAttempts))")
                if status == "succeeded" {
                    expect(
                        result["attempt"]?.intValue == failTimes + 1 || (result["branch"]?.intValue ?? 0) > 0,
                        "flaky succeeded on attempt \(result["attempt"]?.jsonString ?? "nil"), expected \(failTimes + 1)")
                }
            } else {
                expect(
                    status == "dead_lettered", "\(ended), expected dead_lettered (fail_times \(failTimes) ≥ max_attempts \(maxAttempts))")
                expect(letters.isEmpty || reasons.contains("retries_exhausted"), "flaky dead letter reasons \(reasons.sorted())")
            }
        case "sleeper", "approval":
            if status == "budget_exceeded" { break }
            expect(status == "succeeded" && seq == 2, "\(ended), expected succeeded after 2 steps")
            if agent == "approval", status == "succeeded" {
                let decision = result["decision"]?.stringValue ?? ""
                expect(["approve", "reject", "timeout"].contains(decision), "approval decided '\(decision)'")
            }
        case "fanout":
            if status == "budget_exceeded" { break }
            let children = input["children"]?.intValue ?? 10
            expect(status == "succeeded" && seq == 2, "\(ended), expected succeeded after 2 steps")
            expect(Int64(record.children.count) == children, "fanout started \(record.children.count) children, expected \(children)")
            if status == "succeeded" {
                expect(result["children"]?.intValue == children, "fanout result names \(result["children"]?.jsonString ?? "nil") children")
                for child in record.children {
                    let childStatus = snapshot.tasks[child]?.fields["status"] ?? "missing"
                    expect(terminal.contains(childStatus), "child \(child) is \(childStatus) while its parent succeeded")
                }
            }
        case "spender":
            if let steps = input["steps"]?.intValue, status == "succeeded" {
                expect(seq == steps + 1, "\(ended), expected \(steps + 1) steps (\(steps) spending steps and the last)")
            } else {
                expect(status == "budget_exceeded", "\(ended), expected budget_exceeded (or succeeded with 'steps')")
            }
        default:
            break
        }
        return problems
    }
}
