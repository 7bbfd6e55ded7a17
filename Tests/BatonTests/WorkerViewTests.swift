import Testing

@testable import Baton

@Suite("Worker views")
struct WorkerViewTests {
    static func worker(_ id: String, lead: Int64?) -> WorkerView {
        var info: [String: JSONValue] = ["pid": .int(1)]
        if let lead { info["prewarm_lead_ms"] = .int(lead) }
        return WorkerView(id: id, heartbeatAt: "", heartbeatAgeSeconds: 0, inFlight: 0, info: .object(info))
    }

    @Test("live workers that disagree on sweeps.prewarm_lead are counted by lead; agreeing ones, and workers that do not say, are not")
    func prewarmLeadMismatch() {
        #expect(WorkerView.prewarmLeadMismatch([Self.worker("a", lead: 60_000), Self.worker("b", lead: 60_000)]) == nil)
        // A worker of an earlier version says nothing: not a disagreement.
        #expect(WorkerView.prewarmLeadMismatch([Self.worker("a", lead: 60_000), Self.worker("old", lead: nil)]) == nil)
        #expect(
            WorkerView.prewarmLeadMismatch([Self.worker("a", lead: 60_000), Self.worker("b", lead: 30_000), Self.worker("c", lead: 60_000)])
                == [60_000: 2, 30_000: 1])
    }
}
