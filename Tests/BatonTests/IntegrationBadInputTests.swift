import AMQPClient
import Baton
import Foundation
import TestSupport
import Testing

/// Issue 7, "Bad input": a corpus of malformed submits and signals, published raw to `baton.submit` and
/// `baton.signals` (DESIGN.md §3, §6) interleaved with good tasks and signals, on a RabbitMQ and a Redis of this
/// test's own (a sandbox, like ``IntegrationWaitRestartTests``): some of these messages crashed a worker before
/// the fix, and the shared test servers' queues are consumed by other checkouts' workers too.
@Suite("Integration: bad input end to end", .serialized)
struct IntegrationBadInputTests {
    /// A message of the corpus and the dead letter it must end as.
    struct Bad {
        var name: String
        var exchange: String
        var routingKey: String
        var body: [UInt8]
        var contentType: String? = "application/json"
        var reason: String
        var field: String?
        /// A piece of the dead letter's error text.
        var error: String
    }

    static func json(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Bad submits; each body holds `marker` (in its first bytes, before anything invalid).
    static func badSubmits(marker m: String) -> [Bad] {
        let submit = Topology.submitExchange
        func bad(
            _ name: String, _ body: [UInt8], _ field: String?, _ error: String, reason: String = "malformed", key: String = "stepchain"
        )
            -> Bad
        {
            Bad(name: name, exchange: submit, routingKey: key, body: body, reason: reason, field: field, error: error)
        }
        let huge =
            json("{\"v\":1,\"id\":\"\(m)-huge\",\"agent\":\"stepchain\",\"input\":{\"pad\":\"")
            + Array(repeating: UInt8(ascii: "x"), count: 16 << 20) + json("\"}}")
        var wrongType = bad("wrong content type", json("{\"v\":1,\"id\":\"\(m)-text\",\"agent\":\"stepchain\",\"input\":{}}"), nil, "")
        wrongType.field = "content_type"
        wrongType.error = "content_type 'text/plain'"
        wrongType.contentType = "text/plain"
        var xml = bad("XML", json("<submit id=\"\(m)-xml\"><agent>stepchain</agent></submit>"), nil, "")
        xml.field = "content_type"
        xml.error = "application/xml"
        xml.contentType = "application/xml"
        return [
            bad(
                "truncated JSON", json("{\"v\":1,\"id\":\"\(m)-trunc\",\"agent\":\"stepchain\",\"input\":{\"steps\":"), nil,
                "not valid JSON"),
            bad("agent a number", json("{\"v\":1,\"id\":\"\(m)-type\",\"agent\":7,\"input\":{}}"), "agent", "'agent' has the wrong type"),
            bad(
                "input.steps a string", json("{\"v\":1,\"id\":\"\(m)-steps\",\"agent\":\"stepchain\",\"input\":{\"steps\":\"three\"}}"),
                "input.steps", "input.steps"),
            bad("v 2", json("{\"v\":2,\"id\":\"\(m)-v2\",\"agent\":\"stepchain\",\"input\":{}}"), "v", "\"v\": 2"),
            bad("v a string", json("{\"v\":\"1\",\"id\":\"\(m)-vs\",\"agent\":\"stepchain\"}"), "v", "'v' has the wrong type"),
            bad("v missing", json("{\"id\":\"\(m)-nov\",\"agent\":\"stepchain\"}"), "v", "missing the required field 'v'"),
            bad("agent missing", json("{\"v\":1,\"id\":\"\(m)-noagent\",\"input\":{}}"), "agent", "'agent'"),
            bad("id with a space", json("{\"v\":1,\"id\":\"\(m) spaced\",\"agent\":\"stepchain\"}"), "id", "'id'"),
            bad("top-level array", json("[\"\(m)-array\",1]"), nil, "wrong type"),
            bad("16 MiB body", huge, nil, "1048576", reason: "oversized"),
            bad(
                "invalid UTF-8",
                json("{\"v\":1,\"id\":\"\(m)-utf8\",\"agent\":\"stepchain\",\"input\":{\"s\":\"") + [0xFF, 0xFE, 0xC3] + json("\"}}"),
                nil, "not UTF-8"),
            bad(
                "100k nested arrays",
                json("{\"v\":1,\"id\":\"\(m)-deep\",\"agent\":\"stepchain\",\"input\":")
                    + Array(repeating: UInt8(ascii: "["), count: 100_000)
                    + Array(repeating: UInt8(ascii: "]"), count: 100_000) + json("}"), nil, "more than 128 levels"),
            // Foundation's JSON scanner trapped on exactly this (the 513th unclosed bracket as the last byte): a poison
            // message that killed every worker it reached.
            bad(
                "513 unclosed brackets", json("{\"id\":\"\(m)-513\",\"input\":") + Array(repeating: UInt8(ascii: "["), count: 512), nil,
                "more than 128 levels"),
            bad(
                "unknown agent (routed)", json("{\"v\":1,\"id\":\"\(m)-unknown\",\"agent\":\"no-such-agent\",\"input\":{}}"), "agent",
                "no-such-agent", reason: "unknown_agent"),
            bad(
                "unknown agent (unrouted)", json("{\"v\":1,\"id\":\"\(m)-unrouted\",\"agent\":\"no-such-\(m)\",\"input\":{}}"), "agent",
                "no-such-\(m)", reason: "unknown_agent", key: "no-such-\(m)"),
            wrongType, xml,
        ]
    }

    /// Bad signals; `task` and `ended` are real tasks (waiting, and succeeded).
    static func badSignals(marker m: String, task: String, ended: String) -> [Bad] {
        func bad(_ name: String, _ body: [UInt8], _ field: String?, _ error: String, reason: String = "malformed") -> Bad {
            Bad(name: name, exchange: Topology.signalsExchange, routingKey: "", body: body, reason: reason, field: field, error: error)
        }
        var wrongType = bad(
            "signal wrong content type", json("{\"id\":\"\(m)-s-text\",\"v\":1,\"task_id\":\"\(task)\",\"name\":\"approve\"}"),
            nil, "content_type 'text/plain'")
        wrongType.field = "content_type"
        wrongType.contentType = "text/plain"
        return [
            bad(
                "signal truncated", json("{\"id\":\"\(m)-s-trunc\",\"v\":1,\"task_id\":\"\(task)\",\"name\":\"appr"), nil, "not valid JSON"),
            bad("signal v 2", json("{\"id\":\"\(m)-s-v2\",\"v\":2,\"task_id\":\"\(task)\",\"name\":\"approve\"}"), "v", "\"v\": 2"),
            bad("signal name a number", json("{\"id\":\"\(m)-s-type\",\"v\":1,\"task_id\":\"\(task)\",\"name\":5}"), "name", "'name'"),
            bad("signal without task_id", json("{\"id\":\"\(m)-s-notask\",\"v\":1,\"name\":\"approve\"}"), "task_id", "'task_id'"),
            bad(
                "signal for no task", json("{\"id\":\"\(m)-s-nosuch\",\"v\":1,\"task_id\":\"\(m)-nosuch\",\"name\":\"approve\"}"),
                "task_id", "does not exist", reason: "permanent_error"),
            bad(
                "signal for an ended task", json("{\"id\":\"\(m)-s-ended\",\"v\":1,\"task_id\":\"\(ended)\",\"name\":\"approve\"}"),
                "task_id", "already ended", reason: "permanent_error"),
            bad(
                "signal invalid UTF-8",
                json("{\"id\":\"\(m)-s-utf8\",\"v\":1,\"task_id\":\"\(task)\",\"name\":\"appr") + [0xC0, 0xAF] + json("ove\"}"), nil,
                "not UTF-8"),
            bad(
                "signal 100k nested payload",
                json("{\"id\":\"\(m)-s-deep\",\"v\":1,\"task_id\":\"\(task)\",\"name\":\"approve\",\"payload\":")
                    + Array(repeating: UInt8(ascii: "["), count: 100_000) + Array(repeating: UInt8(ascii: "]"), count: 100_000) + json("}"),
                "payload", "over the", reason: "oversized"),
            bad(
                "signal 513 unclosed brackets",
                json("{\"id\":\"\(m)-s-513\",\"payload\":") + Array(repeating: UInt8(ascii: "["), count: 512),
                nil, "more than 128 levels"),
            bad(
                "signal 200 nested arrays",
                json("{\"id\":\"\(m)-s-200\",\"v\":1,\"task_id\":\"\(task)\",\"name\":\"approve\",\"payload\":")
                    + Array(repeating: UInt8(ascii: "["), count: 200) + Array(repeating: UInt8(ascii: "]"), count: 200) + json("}"), nil,
                "more than 128 levels"),
            bad(
                "signal payload over 64 KiB",
                json("{\"id\":\"\(m)-s-big\",\"v\":1,\"task_id\":\"\(task)\",\"name\":\"approve\",\"payload\":\"")
                    + Array(repeating: UInt8(ascii: "y"), count: 66_000) + json("\"}"), "payload", "65536", reason: "oversized"),
            bad(
                "signal of 16 MiB",
                json("{\"id\":\"\(m)-s-huge\",\"v\":1,\"task_id\":\"\(task)\",\"name\":\"approve\",\"payload\":\"")
                    + Array(repeating: UInt8(ascii: "y"), count: 16 << 20) + json("\"}"), "payload", "bytes, over the", reason: "oversized"),
            wrongType,
        ]
    }

    @Test(
        "Malformed submits and signals interleaved with good ones: every bad one is dead-lettered with a reason naming the field or limit, every good task succeeds, the worker keeps running, nothing is lost",
        .enabled(if: TestServers.required || IntegrationWaitRestartTests.installed), .timeLimit(.minutes(5)))
    func badInputEndToEnd() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        try await sandbox.withServices { _ in try await Self.run(sandbox.configuration) }
    }

    static func run(_ configuration: LocalServices.Configuration) async throws {
        let environment = Harness.environment(["BATON_AMQP_URL": configuration.amqpURL, "BATON_REDIS_URL": configuration.redisURL])
        let client = try await BatonClient.connect(
            amqpURL: configuration.amqpURL, redisURL: configuration.redisURL, publishing: true, logger: Harness.logger)
        defer { Task { await client.close() } }
        let id = TestServers.uniqueName("it-bad-input")
        let process = try WorkerProcess.start(
            executable: try Harness.baton(), arguments: ["worker", "--id", id, "--lease", "3", "--drain-timeout", "3"],
            environment: environment, outputFile: try TestFiles.path("worker-bad-input") + ".log")
        let worker = try await Harness.registered(process, id: id, client: client, timeout: .seconds(30))
        defer { worker.process.sigkill() }
        let marker = TestServers.uniqueName("bad")

        // Two approvals wait for signals; one stepchain has ended (signals to it are refused).
        let approve = try await Harness.submit(client, IntegrationWaitTests.approval("\(marker)-approve", timeout: 3600))
        let reject = try await Harness.submit(client, IntegrationWaitTests.approval("\(marker)-reject", timeout: 3600))
        let ended = try await Harness.submit(client, Harness.stepchain(id: "\(marker)-ended", steps: 1))
        try await Harness.waitForStatus(client, approve, ["waiting"], workers: [worker])
        try await Harness.waitForStatus(client, reject, ["waiting"], workers: [worker])
        try await Harness.waitForStatus(client, ended, ["succeeded"], workers: [worker])

        // The corpus, a good submit after every bad one; a duplicate id twice (one task); good signals among the bad.
        let submits = badSubmits(marker: marker)
        let signals = badSignals(marker: marker, task: approve, ended: ended)
        var messages: [AMQPMessage] = []
        var good: [String] = []
        func message(_ exchange: String, _ key: String, _ body: [UInt8], contentType: String? = "application/json") -> AMQPMessage {
            AMQPMessage(
                exchange: exchange, routingKey: key, body: body, properties: AMQPProperties(contentType: contentType, deliveryMode: 2))
        }
        let duplicate = "\(marker)-dup"
        for (index, bad) in submits.enumerated() {
            messages.append(message(bad.exchange, bad.routingKey, bad.body, contentType: bad.contentType))
            let goodID = index % 4 == 0 ? duplicate : "\(marker)-good-\(index)"
            if goodID != duplicate { good.append(goodID) }
            let body = try JSONCoding.encode(Harness.stepchain(id: goodID, steps: 3))
            messages.append(message(Topology.submitExchange, "stepchain", body))
        }
        good.append(duplicate)
        for (index, bad) in signals.enumerated() {
            messages.append(message(bad.exchange, bad.routingKey, bad.body, contentType: bad.contentType))
            if index == signals.count / 2 {
                // A signal the waiting task does not wait for, twice with one id: kept once.
                let callback = try JSONCoding.encode(
                    SignalRequest(taskID: approve, name: "callback", payload: ["n": 1], id: "\(marker)-callback"))
                messages.append(message(Topology.signalsExchange, "", callback))
                messages.append(message(Topology.signalsExchange, "", callback))
                let rejected = try JSONCoding.encode(SignalRequest(taskID: reject, name: "reject", id: "\(marker)-rejected"))
                messages.append(message(Topology.signalsExchange, "any-key", rejected, contentType: "application/json; charset=utf-8"))
            }
        }
        // Plain content type absent: still JSON.
        messages.append(
            message(
                Topology.signalsExchange, "", try JSONCoding.encode(SignalRequest(taskID: approve, name: "approve", id: "\(marker)-ok")),
                contentType: nil))
        try await publish(messages, url: configuration.amqpURL)

        // Every bad message is one dead letter, with its reason, field and error.
        let expected = submits + signals
        var letters: [DeadLetterView] = []
        _ = try await eventually(timeout: .seconds(60), interval: .milliseconds(200)) {
            letters = try await client.queries.deadLetters(limit: 1000).filter { $0.body.contains(marker) }
            return letters.count >= expected.count || !worker.process.isRunning
        }
        #expect(worker.process.isRunning, "the worker died:\n\(worker.log.suffix(4000))")
        #expect(letters.count == expected.count, "dead letters: \(letters.map { "\($0.reason) \($0.field ?? "-"): \($0.error)" })")
        for bad in expected {
            let key = Self.key(of: bad.body, marker: marker)
            let matching = letters.filter { $0.body.contains(key) }
            guard matching.count == 1, let letter = matching.first else {
                Issue.record("\(bad.name): \(matching.count) dead letters")
                continue
            }
            #expect(letter.reason == bad.reason, "\(bad.name): \(letter.error)")
            #expect(letter.field == bad.field, "\(bad.name): \(letter.error)")
            #expect(letter.error.contains(bad.error), "\(bad.name): \(letter.error)")
            #expect(letter.worker == worker.id, "\(bad.name)")
        }
        // No bad submit made a task.
        for suffix in [
            "trunc", "type", "steps", "v2", "vs", "nov", "noagent", "huge", "utf8", "deep", "513", "unknown", "unrouted", "text",
        ] {
            #expect(try await client.queries.task("\(marker)-\(suffix)") == nil, "\(suffix)")
        }

        // Every good task succeeded once (the duplicate id is one task); the good signals were taken.
        for goodID in good {
            let view = try await Harness.waitForStatus(client, goodID, ["succeeded"], workers: [worker])
            #expect(view.seq == 3, "\(goodID)")
            #expect(try await Harness.records(client, goodID).count == 3, "\(goodID)")
        }
        let approved = try await Harness.waitForStatus(client, approve, ["succeeded"], workers: [worker])
        #expect(approved.result?["decision"] == "approve")
        #expect(approved.result?["signal_id"] == .string("\(marker)-ok"))
        let rejected = try await Harness.waitForStatus(client, reject, ["succeeded"], workers: [worker])
        #expect(rejected.result?["decision"] == "reject")
        let history = try await client.queries.history(approve)
        #expect(history.filter { $0.type == "signal_received" && $0.data?["name"] == "callback" }.count == 1, "\(history.map(\.type))")

        // Nothing is left in a queue: every message was taken, dead-lettered or turned into a task.
        let queues = [
            Topology.submitQueue(agent: "stepchain"), Topology.submitQueue(agent: "approval"), Topology.unroutedQueue,
            Topology.signalsQueue,
            Topology.deadQueue,
        ]
        let drained = try await eventually(timeout: .seconds(20), interval: .milliseconds(200)) {
            try await depths(queues, url: configuration.amqpURL).allSatisfy { $0.value == 0 }
        }
        let left = try await depths(queues, url: configuration.amqpURL)
        #expect(drained, "\(left)")

        // The worker still runs, and still runs tasks.
        #expect(worker.process.isRunning)
        let after = try await Harness.submit(client, Harness.stepchain(id: "\(marker)-after", steps: 2))
        #expect(try await Harness.waitForStatus(client, after, ["succeeded"], workers: [worker]).seq == 2)
        #expect(worker.process.isRunning)
        #expect(!worker.log.contains("Fatal error"), "\(worker.log.suffix(4000))")
        await worker.process.stop()
    }

    /// The quoted id in `body` that starts with `marker` (`"bad.…-trunc`): tells its dead letter from the others'.
    static func key(of body: [UInt8], marker: String) -> String {
        let text = String(decoding: body.prefix(300), as: UTF8.self)
        guard let start = text.range(of: "\"" + marker) else { return text }
        let rest = text[start.upperBound...]
        return "\"" + marker + rest.prefix { $0 != "\"" }
    }

    /// Publishes raw messages (confirmed) to the sandbox's RabbitMQ.
    static func publish(_ messages: [AMQPMessage], url: String) async throws {
        let connection = try await AMQPConnection.connect(
            try AMQPConfiguration(url: url, connectionName: "baton-bad-input-test"), logger: Harness.logger)
        do {
            let channel = try await connection.openChannel(confirms: true)
            for result in try await channel.publish(messages) { if let result { throw result } }
            await connection.close()
        } catch {
            await connection.close()
            throw error
        }
    }

    /// The message counts of `queues`.
    static func depths(_ queues: [String], url: String) async throws -> [String: Int] {
        let connection = try await AMQPConnection.connect(
            try AMQPConfiguration(url: url, connectionName: "baton-bad-input-test"), logger: Harness.logger)
        defer { Task { await connection.close() } }
        let channel = try await connection.openChannel()
        var out: [String: Int] = [:]
        for queue in queues { out[queue] = Int(try await channel.inspectQueue(queue).messageCount) }
        return out
    }
}
