import Baton
import Foundation
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: 4. Malformed messages

    struct Malformed: Sendable {
        var name: String
        var exchange: String
        var routingKey: String
        var body: [UInt8]
        var reason: String
        var field: String?
        /// A piece of the error text.
        var error: String
    }

    /// Messages each carrying `marker` in their body, so their dead letters can be told from others'.
    static func malformedMessages(marker: String) -> [Malformed] {
        func json(_ text: String) -> [UInt8] { Array(text.utf8) }
        let oversized =
            json("{\"v\":1,\"id\":\"\(marker)-big\",\"agent\":\"stepchain\",\"input\":{\"pad\":\"")
            + Array(repeating: UInt8(ascii: "x"), count: (1 << 20) + 10) + json("\"}}")
        return [
            Malformed(
                name: "step not JSON", exchange: Topology.stepsExchange, routingKey: "default", body: json("not json \(marker)"),
                reason: "malformed", field: nil, error: "not valid JSON"),
            Malformed(
                name: "step seq wrong type", exchange: Topology.stepsExchange, routingKey: "default",
                body: json(
                    "{\"v\":1,\"task\":\"\(marker)-t\",\"agent\":\"stepchain\",\"step\":\"append\",\"seq\":\"zero\",\"branch\":0,\"attempt\":1}"
                ),
                reason: "malformed", field: "seq", error: "seq"),
            Malformed(
                name: "submit not JSON", exchange: Topology.submitExchange, routingKey: "stepchain", body: json("{not json \(marker)"),
                reason: "malformed", field: nil, error: "not valid JSON"),
            Malformed(
                name: "submit without agent", exchange: Topology.submitExchange, routingKey: "stepchain",
                body: json("{\"v\":1,\"id\":\"\(marker)-noagent\",\"input\":{}}"), reason: "malformed", field: "agent", error: "agent"),
            Malformed(
                name: "submit budget.max_steps wrong type", exchange: Topology.submitExchange, routingKey: "stepchain",
                body: json(
                    "{\"v\":1,\"id\":\"\(marker)-budget\",\"agent\":\"stepchain\",\"input\":{},\"budget\":{\"max_steps\":\"lots\"}}"),
                reason: "malformed", field: "budget.max_steps", error: "budget.max_steps"),
            Malformed(
                name: "submit for an agent no worker serves", exchange: Topology.submitExchange, routingKey: "no-such-agent-\(marker)",
                body: json("{\"v\":1,\"id\":\"\(marker)-unknown\",\"agent\":\"no-such-agent-\(marker)\",\"input\":{}}"),
                reason: "unknown_agent", field: "agent", error: "no-such-agent-\(marker)"),
            Malformed(
                name: "submit over 1 MiB", exchange: Topology.submitExchange, routingKey: "stepchain", body: oversized,
                reason: "oversized", field: nil, error: "1048576"),
        ]
    }

    @Test("Malformed steps and submits are dead-lettered with a reason naming the field; the worker keeps running")
    func malformedMessages() async throws {
        try await Harness.withClient { client in
            let worker = try await Harness.startWorker("malformed", client: client)
            defer { worker.process.sigkill() }
            let marker = TestServers.uniqueName("malformed")
            let cases = Self.malformedMessages(marker: marker)
            try await Harness.publish(cases.map { Harness.message(exchange: $0.exchange, routingKey: $0.routingKey, body: $0.body) })

            var letters: [DeadLetterView] = []
            _ = try await eventually(timeout: .seconds(20), interval: .milliseconds(100)) {
                letters = try await client.queries.deadLetters(limit: 1000).filter { $0.body.contains(marker) }
                return letters.count >= cases.count
            }
            #expect(letters.count == cases.count, "dead letters: \(letters.map { "\($0.reason) \($0.field ?? "-")" })")
            for expected in cases {
                let prefix = String(decoding: expected.body.prefix(60), as: UTF8.self)
                let letter = letters.first { $0.body.hasPrefix(prefix) }
                guard let letter else {
                    Issue.record("no dead letter for \(expected.name)")
                    continue
                }
                #expect(letter.reason == expected.reason, "\(expected.name)")
                #expect(letter.field == expected.field, "\(expected.name): \(letter.error)")
                #expect(letter.error.contains(expected.error), "\(expected.name): \(letter.error)")
                #expect(letter.worker == worker.id, "\(expected.name)")
            }
            // No task was created by any of them.
            for suffix in ["-noagent", "-budget", "-unknown", "-big"] {
                #expect(try await client.queries.task(marker + suffix) == nil)
            }

            // `baton dead list --json` shows them too.
            let list = try await WorkerProcess.run(
                executable: try Harness.baton(), arguments: ["dead", "list", "--json"], environment: Harness.environment())
            #expect(list.status == 0, "baton dead list --json: \(list.error)")
            let listed = try JSONValue.parse(Array(list.output.utf8))
            let items = listed["items"]?.arrayValue ?? listed.arrayValue ?? []
            let ours = items.filter { $0["body"]?.stringValue?.contains(marker) ?? false }
            #expect(ours.count == cases.count)
            #expect(Set(ours.compactMap { $0["reason"]?.stringValue }) == ["malformed", "unknown_agent", "oversized"])

            // The worker still runs and still runs tasks.
            #expect(worker.process.isRunning)
            let id = try await Harness.submit(client, Harness.stepchain(id: TestServers.uniqueName("after-malformed"), steps: 3))
            let view = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            #expect(view.seq == 3)
            #expect(worker.process.isRunning)
            await worker.process.stop()
        }
    }
}
