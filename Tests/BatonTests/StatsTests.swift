import Foundation
import TestSupport
import Testing

@testable import Baton

@Suite("Stats")
struct StatsTests {
    static func event(_ type: String, seq: Int64, at seconds: Double, data: JSONValue? = nil, branch: Int64 = 0) -> TaskEvent {
        let date = Date(timeIntervalSince1970: 1_800_000_000 + seconds)
        return TaskEvent(
            id: "\(Int(seconds * 1000))-0", type: type, seq: seq, branch: branch, step: "s",
            at: date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)), data: data)
    }

    static func view(_ id: String, status: String) -> TaskView {
        TaskView(task: ["id": id, "agent": "a", "status": status, "seq": "0", "branch": "0", "attempt": "1"], budget: [:])
    }

    @Test("time in state, retries resolved by bucket, waits resumed by trigger and stalled tasks recovered, from histories")
    func summarizesHistories() throws {
        let timeout: JSONValue = ["error": ["bucket": "timeout"]]
        let fiveHundred: JSONValue = ["error": ["bucket": "provider_5xx"]]
        // A: 2 s active, retried (timeout) and resolved, 10 s waiting for approve, woken by the signal, 1 s active, done.
        let a = [
            Self.event("submitted", seq: 0, at: 0), Self.event("started", seq: 0, at: 0.5), Self.event("step_committed", seq: 1, at: 1),
            Self.event("retrying", seq: 1, at: 2, data: timeout), Self.event("step_committed", seq: 2, at: 3),
            Self.event("waiting", seq: 3, at: 3, data: ["signals": ["approve", "reject"]]),
            Self.event("woke", seq: 3, at: 13, data: ["trigger": "signal"]), Self.event("succeeded", seq: 4, at: 14),
        ]
        // B: retried twice (5xx), then dead-lettered (not resolved); republished once after a stall and then committed.
        let b = [
            Self.event("submitted", seq: 0, at: 0), Self.event("retrying", seq: 0, at: 1, data: ["reason": "stalled: the lease expired"]),
            Self.event("step_committed", seq: 1, at: 2), Self.event("retrying", seq: 1, at: 3, data: fiveHundred),
            Self.event("retrying", seq: 1, at: 4, data: fiveHundred), Self.event("dead_lettered", seq: 1, at: 5),
        ]
        // C: still waiting for approval; D: slept and woke on its time.
        let c = [Self.event("submitted", seq: 0, at: 0), Self.event("waiting", seq: 1, at: 1, data: ["signals": ["approve"]])]
        let d = [
            Self.event("submitted", seq: 0, at: 0), Self.event("sleeping", seq: 1, at: 1),
            Self.event("woke", seq: 1, at: 6, data: ["trigger": "time"]),
            Self.event("succeeded", seq: 2, at: 7),
        ]
        let stats = TaskQueries.summarize([
            (Self.view("a", status: "succeeded"), a), (Self.view("b", status: "dead_lettered"), b), (Self.view("c", status: "waiting"), c),
            (Self.view("d", status: "succeeded"), d),
        ])

        #expect(stats.retries.total == 3)
        #expect(stats.retries.resolved == 1)
        #expect(stats.retries.byBucket["timeout"] == .init(retries: 1, resolved: 1, shareResolved: 1))
        #expect(stats.retries.byBucket["provider_5xx"] == .init(retries: 2, resolved: 0, shareResolved: 0))
        #expect(stats.stalled == .init(republished: 1, recovered: 1))
        #expect(stats.waits.total == 3)
        #expect(stats.waits.resumed == 2)
        #expect(stats.waits.byTrigger == ["signal": 1, "time": 1])
        #expect(stats.waits.open == 1)
        #expect(stats.pendingReviews.approvals == 1)
        #expect(stats.timeInState["waiting"] == .init(samples: 1, p50: 10, p95: 10))
        #expect(stats.timeInState["sleeping"] == .init(samples: 1, p50: 5, p95: 5))
        // Totals of the three finished tasks: 14 s, 5 s, 7 s.
        #expect(stats.timeInState["total"] == .init(samples: 3, p50: 7, p95: 14))
        // Retrying intervals: A 2→3, B 1→2 (the stall), B 3→5 (two retries in a row are one interval).
        #expect(stats.timeInState["retrying"] == .init(samples: 3, p50: 1, p95: 2))
    }

    @Test("escalations: dead letters and reviews decided (redrive, fork, discard, raise) with the time it took; redrives that succeeded")
    func summarizesEscalations() throws {
        // E: dead-lettered, redriven a minute later, and the new branch succeeded.
        let e = [
            Self.event("dead_lettered", seq: 1, at: 5), Self.event("redriven", seq: 1, at: 65, branch: 1),
            Self.event("succeeded", seq: 2, at: 70, branch: 1),
        ]
        // F: dead-lettered, its letter discarded 300 s later (no event: the task's `dead_discarded_at`).
        let f = [Self.event("dead_lettered", seq: 1, at: 5)]
        // G: parked at a limit, raised 10 s later, then resumed.
        let g = [
            Self.event("needs_review", seq: 1, at: 2), Self.event("budget_raised", seq: 1, at: 12), Self.event("resumed", seq: 1, at: 12),
        ]
        // H and I: undecided. J: redriven after 7 s, dead-lettered again, undecided (its redrive did not succeed).
        let h = [Self.event("dead_lettered", seq: 1, at: 5)]
        let i = [Self.event("needs_review", seq: 1, at: 1)]
        let j = [
            Self.event("dead_lettered", seq: 1, at: 3), Self.event("redriven", seq: 1, at: 10, branch: 1),
            Self.event("dead_lettered", seq: 2, at: 20, branch: 1),
        ]
        // K: two redrives 2 s after each dead letter; only the second ran to success.
        let k = [
            Self.event("dead_lettered", seq: 1, at: 2), Self.event("redriven", seq: 1, at: 4, branch: 1),
            Self.event("dead_lettered", seq: 2, at: 6, branch: 1), Self.event("redriven", seq: 2, at: 8, branch: 2),
            Self.event("succeeded", seq: 3, at: 9, branch: 2),
        ]
        // L: dead-lettered, then forked 30 s later (a decision too).
        let l = [Self.event("dead_lettered", seq: 1, at: 1), Self.event("forked", seq: 1, at: 31, branch: 1)]
        let stats = TaskQueries.summarize(
            [
                (Self.view("e", status: "succeeded"), e), (Self.view("f", status: "dead_lettered"), f),
                (Self.view("g", status: "queued"), g), (Self.view("h", status: "dead_lettered"), h),
                (Self.view("i", status: "needs_review"), i), (Self.view("j", status: "dead_lettered"), j),
                (Self.view("k", status: "succeeded"), k), (Self.view("l", status: "queued"), l),
            ], discardedAt: ["f": 1_800_000_305, "j": 1_800_000_004])
        let recovery = stats.recovery
        #expect(recovery.escalated == 10)
        // Decided after 2, 2, 7, 10, 30, 60 and 300 s; J's discard time predates its last dead letter (not its decision).
        #expect(recovery.decided == 7)
        #expect(recovery.timeToDecision == .init(samples: 7, p50: 10, p95: 300))
        #expect(recovery.redriven == 4)
        #expect(recovery.redrivenSucceeded == 2)
        #expect(recovery.shareRedrivenSucceeded == 0.5)
    }

    @Test("baton stats --json counts tasks by status from the indexes", .enabled(if: TestServers.available))
    func cliCountsByStatus() async throws {
        func cancelledCount() async throws -> Int {
            let result = try await CLITests.baton(["stats", "--json", "--since", "1m", "--sample", "50"])
            try #require(result.status == 0, "\(result.error)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
            let counts = try #require(object["counts"] as? [String: Int])
            #expect(object["time_in_state"] is [String: Any])
            #expect((object["recovery"] as? [String: Any])?["escalated"] is Int)
            #expect((object["sampled_tasks"] as? Int ?? 0) <= 50)
            return try #require(counts["cancelled"])
        }
        let before = try await cancelledCount()
        _ = try await CLITests.cancelledTasks(3)
        #expect(try await cancelledCount() >= before + 3)
        let text = try await CLITests.baton(["stats"])
        #expect(text.status == 0)
        #expect(text.output.contains("tasks          "))
        #expect(text.output.contains("cancelled"))
    }
}
