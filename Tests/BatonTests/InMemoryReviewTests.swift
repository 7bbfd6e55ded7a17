import Baton
import BatonExamples
import BatonTesting
import Foundation
import TestSupport
import Testing

/// `needs_review` on the in-memory backend: the same rules as the Redis scripts (claim, commit, raise, reject).
@Suite("In-memory review of caps")
struct InMemoryReviewTests {
    /// A spender whose agent asks for review at every cap (the agent-level default).
    struct ReviewedSpender: Agent {
        struct State: Codable, Sendable { var steps = 0 }
        static let name = "reviewed-spender"
        static let steps = ["spend"]
        static var onLimit: OnLimit { .review }
        func initialState(for input: JSONValue) throws -> State { State() }
        func run(step: String, context: StepContext<ReviewedSpender>) async throws -> StepOutcome {
            context.state.steps += 1
            if context.state.steps > 3 { return .complete(["steps": .int(Int64(context.state.steps))]) }
            try await context.charge(costUSD: 2)
            return .next("spend")
        }
    }

    @Test("on_limit=review: the cap parks the task (no message, no lease); a raise resumes it to success")
    func parkAndRaise() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(
            agent: "spender", input: ["cost_usd_per_step": 0.5, "steps": 4], budget: BudgetRequest(maxCostUSD: 1, onLimit: .review))
        await harness.runUntilIdle()
        let parked = try #require(harness.task(id))
        #expect(parked.status == "needs_review")
        #expect(parked.statusReason == "needs review: cost limit reached ($1.00)")
        #expect(parked.usage.costMicros == 1_000_000)
        #expect(parked.seq == 2)
        #expect(parked.leaseOwner.isEmpty)
        #expect(harness.pendingDeliveries.isEmpty)
        #expect(parked.events.last?.type == "needs_review")
        #expect(parked.events.last?.data["kind"] == "cost")

        #expect(try await harness.raiseBudget(id, "max_cost_usd=0.5") == ControlResult("still", "cost"))
        #expect(try await harness.raiseBudget(id, "max_tokens=+5") == ControlResult("no_limit", "max_tokens"))
        #expect(try await harness.raiseBudget(id, "max_cost_usd=+2", reason: "ok", actor: "ana") == ControlResult("resumed", "queued"))
        await harness.runUntilIdle()
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.usage.costMicros == 2_000_000)
        #expect(done.limits.maxCostMicros == 3_000_000)
        let raised = try #require(done.events(ofType: "budget_raised").first)
        #expect(raised.data["actor"] == "ana")
        #expect(raised.data["reason"] == "ok")
        #expect(done.events(ofType: "resumed").first?.data["trigger"] == "budget")
        #expect(try await harness.raiseBudget(id, "max_cost_usd=+2") == ControlResult("terminal", "succeeded"))
    }

    @Test("the agent's onLimit default parks a step whose charge crosses the cap; it runs again from its partial state after a raise")
    func agentDefaultAndCrossingCharge() async throws {
        var registry = AgentRegistry()
        registry.register(ReviewedSpender())
        let harness = BatonTestHarness(registry: registry)
        let id = try await harness.submit(agent: ReviewedSpender.name, budget: BudgetRequest(maxCostUSD: 3))
        await harness.runUntilIdle()
        let parked = try #require(harness.task(id))
        // $2, then the second charge crosses $3: the step stops there, its state and charge committed.
        #expect(parked.status == "needs_review")
        #expect(parked.usage.costMicros == 4_000_000)
        #expect(parked.step == "spend")
        #expect(parked.error == nil)
        #expect(try harness.state(of: id, as: ReviewedSpender.State.self).steps == 2)
        #expect(try await harness.raiseBudget(id, "max_cost_usd=10") == ControlResult("resumed", "queued"))
        await harness.runUntilIdle()
        #expect(harness.task(id)?.status == "succeeded")
    }

    @Test("reject ends a task in needs_review as cancelled with actor and reason; reject of another status is a conflict")
    func reject() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(
            agent: "spender", input: ["cost_usd_per_step": 1.0], budget: BudgetRequest(maxCostUSD: 1, onLimit: .review))
        await harness.runUntilIdle()
        #expect(harness.task(id)?.status == "needs_review")
        #expect(await harness.reject(id, reason: "no", actor: "bob") == ControlResult("cancelled", "cancelled"))
        let task = try #require(harness.task(id))
        #expect(task.status == "cancelled")
        #expect(task.statusReason == "rejected in review: no")
        #expect(task.events.last?.data == ["reason": "no", "actor": "bob", "action": "reject"])
        #expect(await harness.reject(id) == ControlResult("conflict", "cancelled"))
    }

    @Test("the deadline ending a wait parks the task; raising the deadline resumes the wait's step as timed out")
    func deadlineInAWait() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let deadline = harness.clock.now.addingTimeInterval(120)
        let id = try await harness.submit(
            ApprovalAgent.self, input: ApprovalAgent.Input(timeoutSeconds: 3600),
            budget: BudgetRequest(deadline: deadline, onLimit: .review))
        await harness.runUntilIdle()
        let parked = try #require(harness.task(id))
        #expect(parked.status == "needs_review")
        #expect(parked.statusReason == "needs review: deadline limit reached")
        #expect(parked.step == "decide")
        #expect(harness.store.timerCount == 0)
        #expect(try await harness.raiseBudget(id, "deadline=+1h") == ControlResult("resumed", "queued"))
        await harness.runUntilIdle()
        let done = try #require(harness.task(id))
        #expect(done.status == "succeeded")
        #expect(done.result?["decision"] == "timeout")
    }

    @Test("cancel ends a task in needs_review with actor and reason")
    func cancelInReview() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(
            agent: "spender", input: ["cost_usd_per_step": 1.0], budget: BudgetRequest(maxCostUSD: 1, onLimit: .review))
        await harness.runUntilIdle()
        #expect(await harness.cancel(id, reason: "stop", actor: "ana") == ControlResult("cancelled", "cancelled"))
        #expect(harness.task(id)?.events.last?.data == ["reason": "stop", "actor": "ana"])
    }

    @Test("a raise of a live task not in review only raises its limits (event, no new message)")
    func raiseALiveTask() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(
            agent: "spender", input: ["cost_usd_per_step": 1.0, "steps": 3], budget: BudgetRequest(maxCostUSD: 1))
        #expect(harness.pendingDeliveries.count == 1)
        #expect(try await harness.raiseBudget(id, "max_cost_usd=+4", reason: "bigger") == ControlResult("raised", "queued"))
        #expect(harness.pendingDeliveries.count == 1)
        #expect(harness.task(id)?.events.last?.type == "budget_raised")
        await harness.runUntilIdle()
        #expect(harness.task(id)?.status == "succeeded")
        #expect(harness.task(id)?.usage.costMicros == 3_000_000)
    }

    @Test("without on_limit a cap still stops the task in budget_exceeded")
    func stopStaysTheDefault() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let id = try await harness.submit(agent: "spender", input: ["cost_usd_per_step": 1.0], budget: BudgetRequest(maxCostUSD: 1))
        await harness.runUntilIdle()
        #expect(harness.task(id)?.status == "budget_exceeded")
    }

    @Test("budget.on_limit on the wire: review and stop are accepted, anything else is an error naming the field")
    func wire() throws {
        let ok = try SubmitRequest.decode(Array(#"{"v":1,"agent":"a","budget":{"on_limit":"review"}}"#.utf8), maxBytes: 1000)
        #expect(ok.budget?.onLimit == .review)
        #expect(BudgetLimits(ok.budget, defaults: BudgetLimits()).reviewOnLimit)
        #expect(throws: BatonError.self) {
            try SubmitRequest.decode(Array(#"{"v":1,"agent":"a","budget":{"on_limit":"later"}}"#.utf8), maxBytes: 1000)
        }
        let raise = try BudgetRaise(parsing: "max_cost_usd=+2,max_steps=50,deadline=+1h")
        #expect(raise.changes.map(\.field) == ["max_cost", "max_steps", "deadline"])
        #expect(raise.changes[0].value == 2_000_000 && raise.changes[0].relative)
        #expect(raise.changes[1].value == 50 && !raise.changes[1].relative)
        #expect(raise.changes[2].value == 3_600_000)
        #expect(throws: BatonError.self) { try BudgetRaise(parsing: "max_money=+2") }
        #expect(throws: BatonError.self) { try BudgetRaise(parsing: "max_steps=+x") }
    }
}

@Suite("In-memory tenant budgets")
struct InMemoryTenantBudgetTests {
    @Test("two tasks of a tenant stop at its daily limit (admitted charges sum to it exactly); another tenant is untouched")
    func dailyLimit() async throws {
        var storeSettings = InMemoryTaskStore.Settings()
        storeSettings.tenantBudgets = TenantBudgets(["acme": .init(maxCostMicrosPerDay: 1_000_000)])
        let harness = BatonTestHarness(registry: .examples, storeSettings: storeSettings)
        let a1 = try await harness.submit(agent: "spender", input: ["cost_usd_per_step": 0.3], tenant: "acme")
        let a2 = try await harness.submit(agent: "spender", input: ["cost_usd_per_step": 0.3], tenant: "acme")
        let b = try await harness.submit(agent: "spender", input: ["cost_usd_per_step": 0.3, "steps": 5], tenant: "beta")
        await harness.runUntilIdle()
        let t1 = try #require(harness.task(a1))
        let t2 = try #require(harness.task(a2))
        #expect(t1.status == "budget_exceeded" && t2.status == "budget_exceeded")
        // $0.30 charges against $1.00: admitted while the counter is below $1.00, so 4 are ($1.20, one charge over at
        // most); the next is refused and counted nowhere.
        #expect(t1.usage.costMicros + t2.usage.costMicros == 1_200_000)
        #expect(harness.store.tenantUsage("acme").costMicros == 1_200_000)
        for task in [t1, t2] { #expect(task.statusReason.hasPrefix("tenant acme daily cost limit reached"), "\(task.statusReason)") }
        #expect(harness.task(b)?.status == "succeeded")
        #expect(harness.store.tenantUsage("beta") == Charge())
    }

    @Test("with on_limit=review a tenant's limit parks the task in needs_review naming tenant and limit")
    func tenantReview() async throws {
        var storeSettings = InMemoryTaskStore.Settings()
        storeSettings.tenantBudgets = TenantBudgets(["acme": .init(maxTokensPerDay: 2_000)])
        let harness = BatonTestHarness(registry: .examples, storeSettings: storeSettings)
        let id = try await harness.submit(
            agent: "spender", input: ["cost_usd_per_step": 0.01], budget: BudgetRequest(onLimit: .review), tenant: "acme")
        await harness.runUntilIdle()
        let task = try #require(harness.task(id))
        #expect(task.status == "needs_review")
        #expect(task.statusReason == "needs review: tenant acme daily tokens limit reached (2000 per day)")
        #expect(task.usage.tokens == 2_000)
    }

    @Test("tenant limits come from tenants.<name>.* in the file and BATON_TENANTS_<NAME>_* in the environment")
    func configuration() async throws {
        let file = try TestFiles.path("tenants") + ".yaml"
        try "tenants:\n  acme:\n    max_cost_usd_per_day: 2.5\n    max_tokens_per_day: 1000\n".write(
            toFile: file, atomically: true, encoding: .utf8)
        let configuration = try await BatonConfiguration.load(
            file: file, environment: ["BATON_TENANTS_BETA_MAX_TOKENS_PER_DAY": "77"])
        let limits = configuration.store.tenantBudgets.limits
        #expect(limits["acme"] == .init(maxCostMicrosPerDay: 2_500_000, maxTokensPerDay: 1_000))
        #expect(limits["beta"] == .init(maxTokensPerDay: 77))
        await #expect(throws: BatonError.self) {
            try await BatonConfiguration.load(file: file, environment: ["BATON_TENANTS_ACME_MAX_COST_USD_PER_DAY": "-1"])
        }
    }
}
