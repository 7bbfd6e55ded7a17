import Baton
import BatonExamples
import Foundation
import RedisClient
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: baton verify (issue 7, acceptance 3)

    /// Creates a task of run `run` on `queue` only (so workers of other test runs on the shared servers never see its
    /// steps), labelled `run=<run>`, and publishes its first step.
    /// A run of its own: its step queue, run id, effects directory and the sink file of that run.
    static func newRun(_ queueName: String) throws -> (queue: String, run: String, directory: String, sink: String) {
        let run = TestServers.uniqueName("run")
        let directory = try TestFiles.directory()
        return (TestServers.uniqueName(queueName), run, directory, EffectsSink.path(directory: directory, run: run))
    }

    static func startRunTask(
        _ client: BatonClient, run: String, queue: String, id: String, agent: String, firstStep: String, state: String,
        input: [String: JSONValue], budget: BudgetRequest? = nil, tenant: String = ""
    ) async throws {
        let task = NewTask(
            id: id, agent: agent, inputJSON: JSONValue.object(input).jsonString, stateJSON: state, firstStep: firstStep, queue: queue,
            limits: BudgetLimits(budget, defaults: ProtocolSettings().defaultLimits), tenant: tenant,
            labelsJSON: JSONValue.object(["run": .string(run)]).jsonString)
        #expect(try await client.store.submit(task) == .created)
        let outbox = try await client.store.pendingOutbox(task: id)
        try await Harness.publish(outbox.values.map(Harness.message))
        try await client.store.outboxDone(task: id, ids: Array(outbox.keys))
    }

    /// Runs `baton verify --run <run> --effects <sink> -o json`: its exit status and report.
    static func verifyCLI(run: String, sink: String, environment: [String: String], queue: String? = nil) async throws -> (
        status: Int32, report: RunReport?, output: String
    ) {
        let result = try await WorkerProcess.run(
            executable: try Harness.baton(),
            arguments: ["verify", "--run", run, "--effects", sink, "-o", "json"] + (queue.map { ["--queue", $0] } ?? []),
            environment: Harness.environment(environment), timeout: .seconds(60))
        let report = try? JSONDecoder().decode(RunReport.self, from: Data(result.output.utf8))
        return (result.status, report, result.output + result.error)
    }

    @Test(
        "baton verify: a real mixed run passes with zeros; an effect applied twice, a lost task, a budget counter off by one and a stale-token commit each fail it, named",
        .timeLimit(.minutes(3)))
    func verifyRunAndCorruptions() async throws {
        try await Harness.withClient { client in
            let (queue, run, directory, sink) = try Self.newRun("it-verify")
            // Two spenders share a tenant whose daily cost limit ($2.50) stops them both (the chaos run's shared budgets).
            let tenant = String(TestServers.uniqueName("vt").lowercased().filter { $0.isLetter || $0.isNumber })
            let tenantEnvironment = ["BATON_TENANTS_\(tenant.uppercased())_MAX_COST_USD_PER_DAY": "2.5"]
            let worker = try await Harness.startWorker(
                "verify", client: client, arguments: ["--queues", queue], environment: tenantEnvironment)
            defer { worker.process.sigkill() }
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            let effects: [String: JSONValue] = ["run": .string(run), "effects_dir": .string(directory)]
            func with(_ input: [String: JSONValue]) -> [String: JSONValue] { input.merging(effects) { $1 } }
            let chainA = TestServers.uniqueName("verify-chain")
            let chainB = TestServers.uniqueName("verify-chain")
            let flaky = TestServers.uniqueName("verify-flaky")
            let broken = TestServers.uniqueName("verify-permanent")
            let sleeper = TestServers.uniqueName("verify-sleeper")
            let approval = TestServers.uniqueName("verify-approval")
            let fanout = TestServers.uniqueName("verify-fanout")
            let spender = TestServers.uniqueName("verify-spender")
            let records = #"{"records":[]}"#
            for id in [chainA, chainB] {
                try await Self.startRunTask(
                    client, run: run, queue: queue, id: id, agent: "stepchain", firstStep: "append", state: records,
                    input: with(["steps": 4, "record_bytes": 16, "tokens_per_step": 9, "cost_usd_per_step": 0.125]))
            }
            try await Self.startRunTask(
                client, run: run, queue: queue, id: flaky, agent: "flaky", firstStep: "call", state: "{}", input: with(["fail_times": 1]))
            try await Self.startRunTask(
                client, run: run, queue: queue, id: broken, agent: "flaky", firstStep: "call", state: "{}",
                input: with(["permanent": true, "bucket": .string(TestServers.uniqueName("verify-bucket"))]))
            try await Self.startRunTask(
                client, run: run, queue: queue, id: sleeper, agent: "sleeper", firstStep: "sleep", state: "{}",
                input: with(["seconds": 0.3]))
            try await Self.startRunTask(
                client, run: run, queue: queue, id: approval, agent: "approval", firstStep: "request", state: #"{"requested":false}"#,
                input: with(["timeout_seconds": 600]))
            try await Self.startRunTask(
                client, run: run, queue: queue, id: fanout, agent: "fanout", firstStep: "fan", state: #"{"started":0}"#,
                input: with(["children": 2, "steps": 2, "child_queue": .string(queue)]))
            try await Self.startRunTask(
                client, run: run, queue: queue, id: spender, agent: "spender", firstStep: "spend", state: #"{"steps":0,"spentMicros":0}"#,
                input: with(["cost_usd_per_step": 1.0]), budget: BudgetRequest(maxCostUSD: 2.5))

            let shared = [TestServers.uniqueName("verify-tenant"), TestServers.uniqueName("verify-tenant")]
            for id in shared {
                try await Self.startRunTask(
                    client, run: run, queue: queue, id: id, agent: "spender", firstStep: "spend", state: #"{"steps":0,"spentMicros":0}"#,
                    input: with(["cost_usd_per_step": 1.0]), budget: BudgetRequest(maxCostUSD: 100), tenant: tenant)
            }

            try await Harness.waitForStatus(client, approval, ["waiting"], workers: [worker])
            _ = try await client.signal(TaskSignal(task: approval, name: "approve", payloadJSON: #"{"by":"test"}"#, actor: "test"))
            let ids = [chainA, chainB, flaky, broken, sleeper, approval, fanout, spender] + shared
            for id in ids {
                try await Harness.waitForStatus(
                    client, id, ["succeeded", "dead_lettered", "budget_exceeded", "failed", "cancelled"], timeout: .seconds(60),
                    workers: [worker])
            }
            // The permanent failure's dead letter is taken into Redis by the worker's intake.
            let letter = try await Harness.waitForDeadLetter(client) { $0.taskID == broken }
            #expect(letter?.reason == "permanent_error")
            // The outboxes empty once the broker confirms (a moment after the status).
            _ = try await eventually(timeout: .seconds(10)) {
                for id in ids where try await client.store.pendingOutbox(task: id).isEmpty == false { return false }
                return true
            }

            // The clean run: zeros. Verify reads the tenant's limits from the configuration, as the worker does.
            var settings = client.store.settings
            settings.tenantBudgets = TenantBudgets([tenant: .init(maxCostMicrosPerDay: 2_500_000)])
            let queries = TaskQueries(store: RedisTaskStore(redis: client.store.redis, settings: settings))
            let snapshot = try await queries.runSnapshot(run: run, effectsPath: sink)
            #expect(snapshot.tenantDays.map(\.tenant) == [tenant])
            #expect(snapshot.tenantDays.first?.costMicros == 3_000_000)
            var report = RunVerifier.verify(snapshot)
            #expect(report.violations == [], "\(report.violations)")
            #expect(report.submitted == 12)
            #expect(report.children == 2)
            #expect(report.succeeded == 8)
            #expect(report.deadLettered == 1)
            #expect(report.budgetExceeded == 3)
            #expect(report.lost == 0 && report.duplicateEffects == 0 && report.staleWrites == 0 && report.budgetMismatch == 0)
            // One effect per committed step: 4 + 4 (chains) + 1 (flaky) + 1 (permanent, not committed) + 2 + 2 + 2 + 2×2
            // (fanout and children) + 3 (spender: two steps and the one that crossed the limit) = 23, and one per committed
            // step of the tenant's spenders (a claim that finds the tenant at its limit stops the task before its step runs).
            let sharedSteps = shared.map { snapshot.tasks[$0].flatMap { Int($0.fields["seq"] ?? "") } ?? 0 }.reduce(0, +)
            #expect(report.effectsApplied == 23 + sharedSteps)
            // The run's own step queue drains (the last acks follow the statuses by a moment).
            _ = try await eventually(timeout: .seconds(10)) {
                try await RunVerifier.inspectQueues([queue], amqpURL: TestServers.amqpURL).first?.ready == 0
            }
            let clean = try await Self.verifyCLI(run: run, sink: sink, environment: tenantEnvironment, queue: queue)
            #expect(clean.status == 0, "\(clean.output)")
            #expect(clean.report?.passed == true)

            // Corruption 1: the sink applies one of chain A's effects a second time.
            let entries = try EffectsSink.read(path: sink).entries
            let applied = try #require(entries.first { $0.task == chainA && $0.outcome == .applied && $0.seq == 2 })
            let handle = try #require(FileHandle(forWritingAtPath: sink))
            try handle.seekToEnd()
            try handle.write(contentsOf: try JSONEncoder().encode(applied) + Data("\n".utf8))
            try handle.close()
            // Corruption 2: chain B left running under a lease that expired, with no message anywhere.
            let redis = client.store.redis
            let keys = client.store.settings.keys
            _ = try await redis.send("HSET", keys.task(chainB), "status", "running", "lease_owner", "ghost-worker", "lease_until", 1)
            // Corruption 3: the spender's cost counter off by one micro-dollar.
            _ = try await redis.send("HINCRBY", keys.budget(spender), "cost", 1)
            // Corruption 4: a commit accepted from a writer with an old fencing token (forged into the sleeper's history).
            _ = try await redis.send(
                "XADD", keys.events(sleeper), "*", "type", "step_committed", "seq", 2, "branch", 0, "step", "wake", "at", 1, "data",
                #"{"worker":"zombie","fence":1,"charged":{"cost":0,"tokens":0,"tool_calls":0,"steps":0}}"#)

            report = RunVerifier.verify(try await queries.runSnapshot(run: run, effectsPath: sink))
            #expect(!report.passed)
            #expect(report.duplicateEffects == 1)
            #expect(report.lost == 1)
            #expect(report.budgetMismatch == 1)
            #expect(report.staleWrites == 1)
            let named = Set(report.violations.map { "\($0.task) \($0.kind)" })
            #expect(named.contains("\(chainA) duplicate_effect"))
            #expect(named.contains("\(chainB) lost"))
            #expect(named.contains("\(chainB) lease_expired"))
            #expect(named.contains("\(spender) budget_mismatch"))
            #expect(named.contains("\(sleeper) stale_write"))
            #expect(report.violations.allSatisfy { [chainA, chainB, spender, sleeper].contains($0.task) }, "\(report.violations)")

            let failing = try await Self.verifyCLI(run: run, sink: sink, environment: tenantEnvironment)
            #expect(failing.status == 1, "\(failing.output)")
            #expect(failing.report?.violations.count == report.violations.count)
            let text = try await WorkerProcess.run(
                executable: try Harness.baton(), arguments: ["verify", "--run", run, "--effects", sink],
                environment: Harness.environment(tenantEnvironment),
                timeout: .seconds(60))
            #expect(text.status == 1)
            #expect(text.output.contains("lost 1 / duplicate-effects 1 / stale-writes 1 / budget-mismatch 1"), "\(text.output)")
            #expect(text.output.contains("\(chainA): duplicate_effect: effect '\(chainA)#2' applied 2 times"), "\(text.output)")

            // An orphaned step message: a step of a finished task left in the run's queue with no worker to take it.
            await worker.process.stop()
            try await Harness.publish([
                Harness.message(
                    OutboxMessage.step(
                        StepMessage(task: chainA, agent: "stepchain", step: "append", seq: 4, branch: 0, attempt: 1), queue: queue))
            ])
            let orphaned = try await Self.verifyCLI(run: run, sink: sink, environment: tenantEnvironment, queue: queue)
            #expect(orphaned.status == 1)
            #expect(
                orphaned.report?.violations.contains {
                    $0.kind == "orphaned_message" && $0.message.contains(Topology.stepsQueue(queue)) && $0.message.contains("1 ready")
                } == true, "\(orphaned.output)")
        }
    }
}

extension IntegrationTests {
    @Test("baton verify: a run with no tasks exits 4 naming the label; no run named exits 64; a bad --label exits 64")
    func verifyUsageErrors() async throws {
        let baton = try Harness.baton()
        var environment = Harness.environment()
        environment["BATON_RUN"] = nil
        let empty = try await WorkerProcess.run(
            executable: baton, arguments: ["verify", "--run", TestServers.uniqueName("empty-run")], environment: environment)
        #expect(empty.status == 4, "\(empty.output)\(empty.error)")
        #expect(empty.error.contains("--label run="), "\(empty.error)")
        let unnamed = try await WorkerProcess.run(executable: baton, arguments: ["verify"], environment: environment)
        #expect(unnamed.status == 64)
        #expect(unnamed.error.contains("--run ID"), "\(unnamed.error)")
        let badLabel = try await WorkerProcess.run(
            executable: baton, arguments: ["submit", "stepchain", "--label", "no-equals-sign"], environment: environment)
        #expect(badLabel.status == 64)
        #expect(badLabel.error.contains("--label looks like key=value"), "\(badLabel.error)")
    }
}

extension IntegrationTests {
    @Test(
        "baton verify: a worker SIGKILLed after the external effect and before Redis recorded it: the re-run is a replay, and the run passes",
        .timeLimit(.minutes(4)))
    func verifyAfterCrashInEffect() async throws {
        try await Harness.withClient { client in
            let (queue, run, directory, sink) = try Self.newRun("it-verify-crash")
            let crashing = try await Harness.startWorker(
                "verify-crash", client: client, crashPoint: "in_effect@1", arguments: ["--queues", queue])
            defer { crashing.process.sigkill() }
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            let id = TestServers.uniqueName("verify-crash")
            try await Self.startRunTask(
                client, run: run, queue: queue, id: id, agent: "stepchain", firstStep: "append", state: #"{"records":[]}"#,
                input: ["steps": 3, "record_bytes": 16, "run": .string(run), "effects_dir": .string(directory)])
            let status = await crashing.process.waitForExit(timeout: .seconds(30))
            #expect(status == 128 + SIGKILL, "the worker did not kill itself:\n\(crashing.log.suffix(2000))")
            let rescuer = try await Harness.startWorker("verify-rescue", client: client, arguments: ["--queues", queue])
            defer { rescuer.process.sigkill() }
            try await Harness.waitForStatus(client, id, ["succeeded"], timeout: .seconds(45), workers: [crashing, rescuer])
            _ = try await eventually(timeout: .seconds(10)) { try await client.store.pendingOutbox(task: id).isEmpty }

            let entries = try EffectsSink.read(path: sink).entries
            #expect(entries.map(\.key) == ["\(id)#1", "\(id)#2", "\(id)#2", "\(id)#3"])
            #expect(entries.map(\.outcome) == [.applied, .applied, .replayed, .applied])
            // The replay came from the rescuing process with a newer lease.
            #expect(entries[1].pid != entries[2].pid)
            #expect(entries[2].token > entries[1].token)
            let report = RunVerifier.verify(try await client.queries.runSnapshot(run: run, effectsPath: sink))
            #expect(report.violations == [], "\(report.violations)")
            #expect(report.effectsApplied == 3)
            #expect(report.effectsReplayed == 1)
            #expect(report.succeeded == 1)
            await rescuer.process.stop()
        }
    }
}

extension IntegrationTests {
    @Test(
        "baton verify: a run whose task was forked from an earlier checkpoint (a second branch re-commits seqs) passes",
        .timeLimit(.minutes(4)))
    func verifyAfterFork() async throws {
        try await Harness.withClient { client in
            let (queue, run, directory, sink) = try Self.newRun("it-verify-fork")
            let worker = try await Harness.startWorker("verify-fork", client: client, arguments: ["--queues", queue])
            defer { worker.process.sigkill() }
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            let id = TestServers.uniqueName("verify-fork")
            try await Self.startRunTask(
                client, run: run, queue: queue, id: id, agent: "stepchain", firstStep: "append", state: #"{"records":[]}"#,
                input: ["steps": 3, "record_bytes": 16, "tokens_per_step": 4, "run": .string(run), "effects_dir": .string(directory)])
            try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            let fork = try await client.fork(task: id, fromSeq: 1, reason: "verify a second branch", actor: "test")
            #expect(fork.result == "done", "\(fork)")
            _ = try await eventually(timeout: .seconds(30)) {
                let view = try await client.queries.task(id)
                return view?.branch == 1 && view?.status == "succeeded"
            }
            _ = try await eventually(timeout: .seconds(10)) { try await client.store.pendingOutbox(task: id).isEmpty }
            let report = RunVerifier.verify(try await client.queries.runSnapshot(run: run, effectsPath: sink))
            #expect(report.violations == [], "\(report.violations)")
            #expect(report.effectsApplied == 3)
            // Branch 0 committed 3 steps and branch 1 two more; the counters kept them all.
            #expect(try await client.queries.task(id)?.budget.used.tokens == 5 * 4)
            await worker.process.stop()
        }
    }
}

extension IntegrationTests {
    @Test("baton verify: a run whose dead-lettered task was redriven (and then succeeded on branch 1) passes", .timeLimit(.minutes(4)))
    func verifyAfterRedrive() async throws {
        try await Harness.withClient { client in
            let (queue, run, directory, sink) = try Self.newRun("it-verify-redrive")
            let worker = try await Harness.startWorker("verify-redrive", client: client, arguments: ["--queues", queue])
            defer { worker.process.sigkill() }
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            let id = TestServers.uniqueName("verify-redrive")
            try await Self.startRunTask(
                client, run: run, queue: queue, id: id, agent: "flaky", firstStep: "call", state: "{}",
                input: [
                    "permanent": true, "bucket": .string(TestServers.uniqueName("verify-redrive")), "run": .string(run),
                    "effects_dir": .string(directory),
                ])
            try await Harness.waitForStatus(client, id, ["dead_lettered"], workers: [worker])
            let letter = try #require(try await Harness.waitForDeadLetter(client) { $0.taskID == id })
            var report = RunVerifier.verify(try await client.queries.runSnapshot(run: run, effectsPath: sink))
            #expect(report.violations == [], "\(report.violations)")
            #expect(report.deadLettered == 1)

            _ = try await client.redrive(deadLetter: letter.id, reason: "the provider recovered", actor: "test")
            _ = try await eventually(timeout: .seconds(30)) {
                let view = try await client.queries.task(id)
                return view?.branch == 1 && view?.status == "succeeded"
            }
            _ = try await eventually(timeout: .seconds(10)) { try await client.store.pendingOutbox(task: id).isEmpty }
            report = RunVerifier.verify(try await client.queries.runSnapshot(run: run, effectsPath: sink))
            #expect(report.violations == [], "\(report.violations)")
            #expect(report.succeeded == 1)
            #expect(report.effectsApplied == 1)
            await worker.process.stop()
        }
    }
}
