import Baton
import BatonExamples
import Foundation
import RedisClient
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: 8. SIGTERM with steps in flight

    /// The exact tokens and cost of a `report` task: the scripted model is deterministic.
    static func reportCharges(documents: Int, topic: String = "quarterly incidents") async throws -> (tokens: Int64, micros: Int64) {
        var tokens: Int64 = 0
        var micros: Int64 = 0
        for index in 1...documents {
            let answer = try await ScriptedModel.complete(prompt: "Analyse document \(index) about \(topic)", thinkMilliseconds: 0)
            tokens += answer.tokens
            micros += Charge.micros(fromUSD: answer.costUSD)
        }
        let report = try await ScriptedModel.complete(
            prompt: "Write a report on \(topic) from \(documents) findings", thinkMilliseconds: 0)
        return (tokens + report.tokens, micros + Charge.micros(fromUSD: report.costUSD))
    }

    @Test("SIGTERM with steps in flight: the worker drains and exits; no step is lost or committed twice", .timeLimit(.minutes(4)))
    func sigtermDrains() async throws {
        try await Harness.withClient { client in
            let drainTimeout = 5
            let first = try await Harness.startWorker("drain", client: client, drainTimeout: drainTimeout)
            defer { first.process.sigkill() }
            let documents = 5
            var ids: [String] = []
            for _ in 0..<20 {
                ids.append(try await Harness.submit(client, Self.report("drain", documents: documents, thinkMilliseconds: 200)))
            }
            // Mid-run: some steps committed, not all tasks done.
            var views: [TaskView] = []
            let midRun = try await eventually(timeout: .seconds(20), interval: .milliseconds(20)) {
                views = try await ids.asyncMap { try await client.queries.task($0) }.compactMap { $0 }
                return views.reduce(0) { $0 + $1.seq } >= 20
            }
            #expect(midRun)
            #expect(views.contains { !$0.isTerminal }, "every task finished before SIGTERM")
            let stopping = ContinuousClock.now
            #expect(first.process.sigterm())
            let status = await first.process.waitForExit(timeout: .seconds(drainTimeout + 5))
            #expect(status == 0, "the worker did not exit cleanly within the drain timeout:\n\(first.log.suffix(3000))")
            #expect(ContinuousClock.now - stopping < .seconds(drainTimeout + 5))
            #expect(first.log.contains("draining"))

            let second = try await Harness.startWorker("drain-2", client: client)
            defer { second.process.sigkill() }
            let charges = try await Self.reportCharges(documents: documents)
            for id in ids {
                let view = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [first, second])
                #expect(view.seq == Int64(documents) + 1, "\(id)")
                #expect(view.budget.used.tokens == charges.tokens, "\(id)")
                #expect(view.costMicros == charges.micros, "\(id)")
                #expect(view.result?["documents"]?.intValue == Int64(documents))
                let checkpoint = try #require(try await client.queries.checkpoint(id))
                let findings = try JSONValue.parse(Array(checkpoint.json.utf8))["findings"]?.arrayValue ?? []
                #expect(findings.count == documents, "\(id)")
                #expect(Harness.commitSeqs(try await client.queries.history(id)) == (1...Int64(documents) + 1).map { $0 }, "\(id)")
                let effects = try await client.store.redis.send("HKEYS", client.store.settings.keys.effects(id)).array ?? []
                #expect(Set(effects.compactMap(\.string)) == Set((1...documents).map { "doc-\($0)" }), "\(id)")
            }
            await second.process.stop()
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
