import BatonExamples
import Foundation
import TestSupport
import Testing

@testable import Baton

/// Human review of caps and tenant budgets (issue 5, acceptance 5 and 6) on the real servers: `baton worker` child
/// processes run the `spender` agent; the built `baton` raises, rejects and shows the history.
@Suite("Review and tenant budgets", .enabled(if: TestServers.available))
struct IntegrationReviewTests {
    static func spender(
        _ id: String, costUSD: Double, steps: Int? = nil, maxCostUSD: Double, onLimit: OnLimit? = .review, tenant: String? = nil
    )
        -> SubmitRequest
    {
        var input: [String: JSONValue] = ["cost_usd_per_step": .double(costUSD)]
        if let steps { input["steps"] = .int(Int64(steps)) }
        return SubmitRequest(
            id: id, agent: "spender", input: .object(input), budget: BudgetRequest(maxCostUSD: maxCostUSD, onLimit: onLimit), tenant: tenant
        )
    }

    /// Creates the task with this build's code and runs it on a step queue of its own (the task's `queue` field
    /// names it, so a resumed step goes there too): workers of other builds on the shared servers never see it.
    /// Submits `request` on step queue `queue` from the start (the task's first step message, in its outbox, names
    /// `queue`), then publishes that message. (A task created on the default queue and moved afterwards could have its
    /// first step republished to the default queue by another test's outbox sweep, and run there by workers without this
    /// test's configuration.)
    static func submit(_ client: BatonClient, _ request: SubmitRequest, queue: String) async throws -> String {
        let (id, outbox) = try await Harness.create(client, request, queue: queue)
        try await Harness.publish(outbox.map(Harness.message))
        return id
    }

    /// A worker consuming only `queue`.
    static func worker(_ name: String, queue: String, client: BatonClient, environment: [String: String] = [:]) async throws
        -> Harness.Worker
    {
        try await Harness.startWorker(name, client: client, arguments: ["--queues", queue], environment: environment)
    }

    static func events(_ id: String) async throws -> [[String: Any]] {
        let history = try await CLITests.baton(["history", id, "--json"])
        #expect(history.status == 0, "\(history.error)")
        return try #require(try CLIOperatorTests.json(history.output)["items"] as? [[String: Any]])
    }

    @Test("on_limit=review: the cost cap parks the task in needs_review; budget --raise resumes it to success; history names the actor")
    func raiseResumesToSuccess() async throws {
        try await Harness.withClient { client in
            let queue = TestServers.uniqueName("it-review")
            let worker = try await Self.worker("review-raise", queue: queue, client: client)
            defer { worker.process.sigkill() }
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            // $0.50 a step, $1.00 limit: the second step's commit reaches it; 4 steps need $2.00.
            let id = try await Self.submit(
                client, Self.spender(TestServers.uniqueName("review-raise"), costUSD: 0.5, steps: 4, maxCostUSD: 1.0), queue: queue)
            let parked = try await Harness.waitForStatus(client, id, ["needs_review"], workers: [worker])
            #expect(parked.statusReason == "needs review: cost limit reached ($1.00)")
            #expect(parked.costMicros == 1_000_000)
            #expect(parked.seq == 2)
            #expect(parked.finishedAt == nil)
            // A parked task holds no lease, no outbox message and no timer.
            #expect(parked.lease == nil)
            #expect(parked.nextTimerAt == nil)
            #expect(try await client.store.pendingOutbox(task: id).isEmpty)
            let checkpoint = try #require(try await client.queries.checkpoint(id))
            #expect(checkpoint.seq == 2)

            // Still over after the raise: exit 5 naming the limit, nothing changed.
            let tooLittle = try await CLITests.baton(["budget", id, "--raise", "max_cost_usd=0.5", "--reason", "not enough"])
            #expect(tooLittle.status == 5, "\(tooLittle.output) \(tooLittle.error)")
            #expect((tooLittle.output + tooLittle.error).contains("cost limit reached"), "\(tooLittle.output) \(tooLittle.error)")
            #expect(try await client.queries.task(id)?.budget.limits.maxCostUSD == 1.0)
            // --reason is required; a task that does not exist is 4.
            #expect(try await CLITests.baton(["budget", id, "--raise", "max_cost_usd=+2"]).status == 64)
            #expect(try await CLITests.baton(["budget", id + "-none", "--raise", "max_cost_usd=+2", "--reason", "x"]).status == 4)

            let reason = "approved overspend \(TestServers.uniqueName("r"))"
            let raised = try await CLITests.baton([
                "budget", id, "--raise", "max_cost_usd=+2,max_steps=+50", "--reason", reason, "--actor", "ana@finance", "-o", "json",
            ])
            #expect(raised.status == 0, "\(raised.output) \(raised.error)")
            let report = try #require((try CLIOperatorTests.json(raised.output)["items"] as? [[String: Any]])?.first)
            #expect(report["result"] as? String == "done")
            #expect(report["status"] as? String == "queued")

            let done = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            #expect(done.costMicros == 2_000_000)
            #expect(done.budget.limits.maxCostUSD == 3.0)
            #expect(done.budget.limits.maxSteps == 10_050)
            #expect(done.result?["steps"]?.intValue == 4)

            let events = try await Self.events(id)
            let review = try #require(events.first { $0["type"] as? String == "needs_review" })
            #expect((review["data"] as? [String: Any])?["kind"] as? String == "cost")
            let raise = try #require(events.first { $0["type"] as? String == "budget_raised" })
            let data = try #require(raise["data"] as? [String: Any])
            #expect(data["actor"] as? String == "ana@finance")
            #expect(data["reason"] as? String == reason)
            let limits = try #require(data["limits"] as? [String: Any])
            #expect((limits["max_cost"] as? [String: Any])?["to"] as? Int == 3_000_000)
            let resumed = try #require(events.first { $0["type"] as? String == "resumed" })
            #expect((resumed["data"] as? [String: Any])?["actor"] as? String == "ana@finance")
            // The decision is in the audit stream too.
            let audit = try await client.queries.auditEntries(limit: 200)
            #expect(audit.contains { $0.action == "budget.raise" && $0.target == id && $0.actor == "ana@finance" && $0.reason == reason })
            await worker.process.stop()
        }
    }

    @Test("baton reject ends a task in needs_review (cancelled) with actor and reason in its history; a raise then is refused")
    func rejectEndsReview() async throws {
        try await Harness.withClient { client in
            let queue = TestServers.uniqueName("it-review")
            let worker = try await Self.worker("review-reject", queue: queue, client: client)
            defer { worker.process.sigkill() }
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            // $0.75 a step against $1.00: the second step's charge crosses the limit and throws; the step is parked with
            // its partial state and charge committed, to run again on a raise.
            let id = try await Self.submit(
                client, Self.spender(TestServers.uniqueName("review-reject"), costUSD: 0.75, maxCostUSD: 1.0), queue: queue)
            let parked = try await Harness.waitForStatus(client, id, ["needs_review"], workers: [worker])
            #expect(parked.statusReason == "needs review: cost limit reached ($1.00)")
            #expect(parked.costMicros == 1_500_000)
            #expect(parked.step == "spend" && parked.seq == 2)
            #expect(parked.error == nil)
            let reason = "too expensive \(TestServers.uniqueName("r"))"
            let rejected = try await CLITests.baton(
                ["reject", id, "--reason", reason], environment: ["BATON_ACTOR": "bob@ops"])
            #expect(rejected.status == 0, "\(rejected.output) \(rejected.error)")
            let view = try #require(try await client.queries.task(id))
            #expect(view.status == "cancelled")
            #expect(view.statusReason == "rejected in review: \(reason)")
            let events = try await Self.events(id)
            let cancelled = try #require(events.first { $0["type"] as? String == "cancelled" })
            let data = try #require(cancelled["data"] as? [String: Any])
            #expect(data["actor"] as? String == "bob@ops")
            #expect(data["reason"] as? String == reason)
            #expect(data["action"] as? String == "reject")
            // Ended: a raise is a conflict (5), a second reject too.
            #expect(try await CLITests.baton(["budget", id, "--raise", "max_cost_usd=+2", "--reason", "late"]).status == 5)
            #expect(try await CLITests.baton(["reject", id, "--reason", "again"]).status == 5)
            await worker.process.stop()
        }
    }

    @Test("Redis scripts: the deadline's timer parks a waiting task that asked for review; a raise resumes its then step")
    func deadlineTimerParksAWait() async throws {
        try await Harness.withClient { client in
            let store = client.store
            let id = TestServers.uniqueName("review-wait")
            let queue = TestServers.uniqueName("it-review-wait")  // no worker consumes it
            let deadline = Int64(Date().timeIntervalSince1970 * 1000) + 3_600_000
            _ = try await store.submit(
                NewTask(
                    id: id, agent: "approval", inputJSON: "{}", stateJSON: "{}", firstStep: "request", queue: queue,
                    limits: BudgetLimits(deadlineMilliseconds: deadline, reviewOnLimit: true)))
            try await store.outboxDone(task: id, ids: Array(try await store.pendingOutbox(task: id).keys))
            guard
                case .run(let claimed) = try await store.claim(
                    StepMessage(task: id, agent: "approval", step: "request", seq: 0, branch: 0, attempt: 1), worker: "it-review",
                    leaseMilliseconds: 10_000)
            else {
                Issue.record("the claim did not run")
                return
            }
            let wait = WaitSpec(
                kind: "wait", signals: ["approve"], delayMilliseconds: nil, atMilliseconds: nil, next: "decide", onTimeout: nil)
            let committed = try await store.commit(
                Commit(task: id, token: claimed.token, seq: 0, kind: .wait(wait), stateJSON: "{}", next: nil))
            #expect(committed == .committed(status: "waiting", seq: 1, outboxID: nil))
            let member = try #require(try await store.redis.send("HGET", store.settings.keys.task(id), "wait_timer").string)
            defer {
                Task {
                    _ = try? await store.redis.send("ZREM", store.settings.keys.timers(bucket: store.settings.keys.bucket(of: id)), member)
                }
            }
            // Fired by this test (the script does not look at the time; no sweep fires it for an hour).
            let woken = try await store.fireWaitTimers([(task: id, timer: member)])
            #expect(woken.map { $0 == nil } == [true])
            let parked = try #require(try await client.queries.task(id))
            #expect(parked.status == "needs_review")
            #expect(parked.statusReason == "needs review: deadline limit reached")
            #expect(parked.step == "decide")
            let history = try await client.queries.history(id)
            #expect(history.last?.type == "needs_review")
            let report = try await client.raiseBudget(
                task: id, try BudgetRaise(parsing: "deadline=+2h"), reason: "more time", actor: "it")
            #expect(report.result == "done" && report.status == "queued")
            let resumed = try #require(try await client.queries.task(id))
            #expect(resumed.status == "queued" && resumed.step == "decide" && resumed.seq == 1)
        }
    }

    @Test("Tenant budget: two tasks of tenant A stop together exactly at A's daily limit; a task of tenant B succeeds untouched")
    func tenantDailyLimit() async throws {
        // Unique tenant names per run: the counters are per UTC day.
        let tenantA = String(TestServers.uniqueName("ta").lowercased().filter { $0.isLetter || $0.isNumber })
        let tenantB = String(TestServers.uniqueName("tb").lowercased().filter { $0.isLetter || $0.isNumber })
        let environment = ["BATON_TENANTS_\(tenantA.uppercased())_MAX_COST_USD_PER_DAY": "1.0"]
        try await Harness.withClient { client in
            let queue = TestServers.uniqueName("it-tenant")
            let worker = try await Self.worker("tenant", queue: queue, client: client, environment: environment)
            defer { worker.process.sigkill() }
            defer { Task { try? await Harness.deleteQueue(Topology.stepsQueue(queue)) } }
            // $0.10 a step, each task's own limit far away ($5): only the tenant's $1.00 a day stops them.
            let a1 = try await Self.submit(
                client, Self.spender(TestServers.uniqueName("tenant-a1"), costUSD: 0.1, maxCostUSD: 5, onLimit: nil, tenant: tenantA),
                queue: queue)
            let a2 = try await Self.submit(
                client, Self.spender(TestServers.uniqueName("tenant-a2"), costUSD: 0.1, maxCostUSD: 5, onLimit: nil, tenant: tenantA),
                queue: queue)
            let b = try await Self.submit(
                client,
                Self.spender(TestServers.uniqueName("tenant-b"), costUSD: 0.1, steps: 15, maxCostUSD: 5, onLimit: nil, tenant: tenantB),
                queue: queue)
            let v1 = try await Harness.waitForStatus(client, a1, ["budget_exceeded"], workers: [worker])
            let v2 = try await Harness.waitForStatus(client, a2, ["budget_exceeded"], workers: [worker])
            // The rule: a charge is admitted while the tenant's counter is below the limit, so with $0.10 charges and a
            // $1.00 limit the admitted charges sum to exactly $1.00; later charges are refused and counted nowhere.
            #expect(v1.costMicros + v2.costMicros == 1_000_000, "a1 \(v1.costMicros) + a2 \(v2.costMicros)")
            for view in [v1, v2] {
                let reason = view.statusReason ?? ""
                #expect(reason.contains("tenant \(tenantA) daily cost limit reached"), "\(reason)")
            }
            let key = client.store.tenantDayKey(tenantA, day: Date())
            let counted = try await client.store.redis.send("HGET", key, "cost").string
            #expect(counted == "1000000")
            let ttl = try await client.store.redis.send("TTL", key).int ?? 0
            #expect(ttl > 86_400 && ttl <= 172_800)

            // `baton status` with the same configuration shows the tenant's spend today.
            let status = try await CLITests.baton(["status", a1], environment: environment)
            #expect(status.status == 0, "\(status.error)")
            #expect(status.output.contains("today     tenant \(tenantA): $1.0000 / $1.0000  tokens 10000 (UTC day)"), "\(status.output)")

            let vb = try await Harness.waitForStatus(client, b, ["succeeded"], workers: [worker])
            #expect(vb.costMicros == 1_500_000)
            // B has no limits: no counters are written for it.
            #expect(try await client.store.redis.send("EXISTS", client.store.tenantDayKey(tenantB, day: Date())).int == 0)
            await worker.process.stop()
        }
    }
}
