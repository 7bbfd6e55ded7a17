import Baton
import BatonExamples
import BatonTesting
import Testing

/// `baton approve --edit`: the approver's merge patch edits the payload the woken step receives.
@Suite("InMemory: edit & approve")
struct InMemoryApproveEditTests {
    @Test("an edited approval wakes the step with the task's input patched, and the history says who edited what")
    func editedApprovalCarriesThePatchedInput() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let input: JSONValue = ["timeout_seconds": 3600, "email": ["to": "ops@example.com", "body": "draft", "cc": "boss"]]
        let id = try await harness.submit(agent: "approval", input: input)
        // One delivery: the step `request` begins the wait (running until idle would let the timeout fire).
        await harness.runUntilIdle(maxDeliveries: 1)
        #expect(harness.task(id)?.status == "waiting")

        let patch: JSONValue = ["email": ["body": "final text", "cc": nil]]
        let outcome = try await harness.approve(id, edit: patch, actor: "ana", reason: "fixed the wording")
        #expect(outcome == .woke)
        await harness.runUntilIdle(maxDeliveries: 1)
        let task = try #require(harness.task(id))
        #expect(task.status == "succeeded")
        #expect(task.result?["decision"] == "approve")
        #expect(task.result?["payload"] == ["timeout_seconds": 3600, "email": ["to": "ops@example.com", "body": "final text"]])
        #expect(task.result?["actor"] == "ana")
        let received = try #require(task.events(ofType: "signal_received").first)
        #expect(received.data["edit"] == patch)
        #expect(received.data["edited_by"] == "ana")
    }

    @Test("with a payload the patch edits that payload; without an edit nothing is marked edited")
    func editAppliesToTheGivenPayload() async throws {
        let harness = BatonTestHarness(registry: .examples)
        let edited = try await harness.submit(agent: "approval", input: ["timeout_seconds": 3600])
        let plain = try await harness.submit(agent: "approval", input: ["timeout_seconds": 3600])
        await harness.runUntilIdle(maxDeliveries: 2)
        try await harness.approve(edited, payload: ["amount": 100, "to": "x"], edit: ["amount": 50], actor: "bo")
        try await harness.approve(plain, payload: ["amount": 100], actor: "bo")
        await harness.runUntilIdle(maxDeliveries: 2)
        #expect(harness.task(edited)?.result?["payload"] == ["amount": 50, "to": "x"])
        #expect(harness.task(plain)?.result?["payload"] == ["amount": 100])
        let plainEvent = try #require(harness.task(plain)?.events(ofType: "signal_received").first)
        #expect(plainEvent.data["edit"] == nil && plainEvent.data["edited_by"] == nil)
    }
}
