import AMQPClient
import Foundation
import Logging
import RedisClient
import TestSupport
import Testing

@testable import Baton

/// The operator commands of issue 6 end to end, the built binary run as a child process: dead-letter groups and
/// bulk actions, the audit stream, checkpoints, queues, doctor.
@Suite("CLI operator")
struct CLIOperatorTests {
    static let logger = Logger(label: "baton.cli-operator-tests")

    static func baton(_ arguments: [String], environment: [String: String] = [:]) async throws -> (
        status: Int32, output: String, error: String
    ) {
        try await CLITests.baton(arguments, environment: environment)
    }

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    static func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map { try json(String($0)) }
    }

    /// Runs `body` with a store on the test Redis (default prefix, like the CLI), closed afterwards.
    static func withStore<T>(_ body: (RedisTaskStore) async throws -> T) async throws -> T {
        let redis = try await RedisConnection.connect(configuration: try RedisConfiguration(url: TestServers.redisURL), logger: logger)
        do {
            let result = try await body(RedisTaskStore(redis: redis))
            await redis.close()
            return result
        } catch {
            await redis.close()
            throw error
        }
    }

    /// A dead letter to make: its task's step and failure, with the task's input.
    struct Failure {
        var step: String
        var bucket: String
        var error: (String) -> String
        var input = "{}"
    }

    /// For each failure: a task of `agent` on step queue `queue`, written through the store and dead-lettered
    /// (its first step message dropped, as if consumed), and its dead letter taken in the way the intake does.
    /// Returns (task id, dead-letter id) pairs.
    static func deadLetters(agent: String, queue: String, _ failures: [Failure]) async throws -> [(task: String, letter: String)] {
        try await withStore { store in
            var made: [(String, String)] = []
            for (index, failure) in failures.enumerated() {
                let id = TestServers.uniqueName("cli-dl-\(index)")
                _ = try await store.submit(
                    NewTask(
                        id: id, agent: agent, inputJSON: failure.input, stateJSON: "{\"records\":[]}", firstStep: failure.step,
                        queue: queue,
                        limits: BudgetLimits(maxSteps: 5, maxAttempts: 1)))
                try await store.outboxDone(task: id, ids: Array(try await store.pendingOutbox(task: id).keys))
                let message = failure.error(id)
                let errorJSON = JSONValue.object([
                    "code": "step_error", "message": .string(message), "bucket": .string(failure.bucket), "retryable": false,
                ])
                let answer = try await store.control(
                    task: id, action: "dead", reason: "retries_exhausted", actor: "cli-operator-tests", extra: errorJSON.jsonString)
                #expect(answer.first == "dead_lettered", "fixture \(id): \(answer)")
                let body = JSONValue.object([
                    "v": 1, "task": .string(id), "agent": .string(agent), "step": .string(failure.step), "seq": 0, "branch": 0,
                    "attempt": 1,
                ])
                let (letter, stored) = try await store.recordDeadLetter([
                    "reason": "retries_exhausted", "error": message, "task_id": id, "agent": agent, "step": failure.step, "seq": "0",
                    "branch": "0", "attempts": "1", "bucket": failure.bucket, "worker": "cli-operator-tests", "body": body.jsonString,
                ])
                #expect(stored)
                made.append((id, letter))
            }
            return made
        }
    }

    /// Declares `baton.steps.<queue>` bound to `baton.steps`, so a redrive's step messages land there; runs `body`
    /// with a channel and deletes the queue afterwards.
    static func withStepQueue<T>(_ queue: String, _ body: (AMQPChannel) async throws -> T) async throws -> T {
        var configuration = try AMQPConfiguration(url: TestServers.amqpURL, connectionName: "baton-cli-operator-tests")
        configuration.connectTimeout = .seconds(5)
        let connection = try await AMQPConnection.connect(configuration, logger: logger)
        let name = Topology.stepsQueue(queue)
        do {
            let channel = try await connection.openChannel()
            try await channel.declareExchange(Topology.stepsExchange, type: .direct, durable: true)
            try await channel.declareQueue(name, durable: false)
            try await channel.bindQueue(name, exchange: Topology.stepsExchange, routingKey: queue)
            let result = try await body(channel)
            _ = try? await channel.deleteQueue(name)
            await connection.close()
            return result
        } catch {
            if let channel = try? await connection.openChannel() { _ = try? await channel.deleteQueue(name) }
            await connection.close()
            throw error
        }
    }

    /// Reads step messages from `queue` until `count` distinct tasks have one (waiting up to 20 s), acking them. A
    /// task may have more than one: the outbox sweep of a worker running meanwhile may publish a copy (harmless by
    /// design: the step protocol dedupes by seq).
    static func stepMessages(_ channel: AMQPChannel, queue: String, count: Int) async throws -> [StepMessage] {
        let consumer = try await channel.consume(queue: Topology.stepsQueue(queue))
        let received: [StepMessage] = await withTaskGroup(of: [StepMessage].self) { group in
            group.addTask {
                var messages: [StepMessage] = []
                for await delivery in consumer.deliveries {
                    try? await channel.ack(delivery)
                    if let message = try? StepMessage.decode(delivery.body) { messages.append(message) }
                    if Set(messages.map(\.task)).count == count { break }
                }
                return messages
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(20))
                return []
            }
            let first = await group.next() ?? []
            group.cancelAll()
            return first
        }
        try? await consumer.cancel()
        return received
    }

    // MARK: - Without servers

    @Test func fingerprintsMaskWhatVariesBetweenOccurrences() {
        let task = "job.0a1b2c3d4e5f6071"
        let normalised = DeadLetterFingerprint.normalise(
            "task \(task) failed: HTTP 503 from \"api.example.com\" after 1234 ms (request 9f86d081-884c-7d65-9a2f-eaa0c55ad015, id deadbeef42)",
            taskID: task)
        #expect(normalised == "task <task> failed: HTTP <n> from <str> after <n> ms (request <uuid>, id <hex>)")
        let a = DeadLetterFingerprint.compute(
            agent: "report", step: "fetch", bucket: "provider_5xx", reason: "retries_exhausted", message: "HTTP 503 after 12 ms",
            taskID: nil)
        let b = DeadLetterFingerprint.compute(
            agent: "report", step: "fetch", bucket: "provider_5xx", reason: "retries_exhausted", message: "HTTP 502 after 7 ms", taskID: nil
        )
        let otherStep = DeadLetterFingerprint.compute(
            agent: "report", step: "parse", bucket: "provider_5xx", reason: "retries_exhausted", message: "HTTP 503 after 12 ms",
            taskID: nil)
        #expect(a == b)
        #expect(a != otherStep)
        #expect(a.count == 16)
    }

    @Test func mergePatchFollowsRFC7396() throws {
        // The example of RFC 7396 §3.
        let target = try JSONValue.parse(
            Array(
                #"{"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "x"}"#
                    .utf8))
        let patch = try JSONValue.parse(
            Array(#"{"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]}"#.utf8))
        let expected = try JSONValue.parse(
            Array(
                #"{"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "x", "phoneNumber": "+01-123-456-7890"}"#
                    .utf8))
        #expect(target.applyingMergePatch(patch) == expected)
        // The patch from A to B turns A into B.
        let diff = target.mergePatch(to: expected)
        #expect(target.applyingMergePatch(diff) == expected)
        #expect(diff["author"] == ["familyName": .null])
        #expect(diff["content"] == nil, "unchanged keys are not in the patch")
        #expect(JSONValue.int(1).applyingMergePatch(["a": .null, "b": 2]) == ["b": 2])
        #expect(JSONValue.object(["a": 1]).applyingMergePatch(.array([1])) == .array([1]))
    }

    @Test func aBulkActionWithoutIdsFiltersOrAllIsAUsageError() async throws {
        let redrive = try await Self.baton(["dead", "redrive", "--reason", "cleanup"])
        #expect(redrive.status == 64)
        #expect(redrive.error.contains("--all"))
        let discard = try await Self.baton(["dead", "discard", "--reason", "cleanup"])
        #expect(discard.status == 64)
        let both = try await Self.baton(["dead", "discard", "some-id", "--agent", "x", "--reason", "cleanup"])
        #expect(both.status == 64)
        #expect(both.error.contains("not both"))
        let badGroup = try await Self.baton(["dead", "list", "--group-by", "colour"])
        #expect(badGroup.status == 64)
        #expect(badGroup.error.contains("--group-by"))
        let badPatch = try await Self.baton(["dead", "redrive", "x", "--reason", "r", "--patch", "{not json"])
        #expect(badPatch.status == 64)
        #expect(badPatch.error.contains("--patch"))
    }

    // MARK: - With the servers

    @Test(.enabled(if: TestServers.available)) func groupByCountsAndKeepsGroupRecordsConsistent() async throws {
        let agent = TestServers.uniqueName("cli-grp")
        let fetch = Failure(step: "fetch", bucket: "provider_5xx") {
            "HTTP 503 from upstream after \(Int.random(in: 10...999)) ms for \($0)"
        }
        let parse = Failure(step: "parse", bucket: "invalid_output") { _ in
            "bad token '\(Int.random(in: 0...9))' at \(Int.random(in: 1...99))"
        }
        let made = try await Self.deadLetters(agent: agent, queue: TestServers.uniqueName("cli-q"), [fetch, fetch, fetch, parse, parse])

        let byFingerprint = try await Self.baton(["dead", "list", "--group-by", "fingerprint", "--agent", agent, "-o", "json"])
        #expect(byFingerprint.status == 0, "\(byFingerprint.error)")
        let groups = try #require(try Self.json(byFingerprint.output)["items"] as? [[String: Any]])
        #expect(groups.map { $0["count"] as? Int } == [3, 2])
        #expect(groups.map { $0["step"] as? String } == ["fetch", "parse"])
        #expect(groups.allSatisfy { ($0["first_seen"] as? String)?.isEmpty == false && ($0["last_seen"] as? String)?.isEmpty == false })
        #expect((groups.first?["sample"] as? String)?.hasPrefix("HTTP 503 from upstream") == true)
        let fingerprint = try #require(groups.first?["key"] as? String)

        let recent = try await Self.baton(["dead", "list", "--group-by", "fingerprint", "--agent", agent, "--since", "1h", "-o", "json"])
        #expect((try Self.json(recent.output)["items"] as? [[String: Any]])?.map { $0["count"] as? Int } == [3, 2])

        let byStep = try await Self.baton(["dead", "list", "--group-by", "step", "--agent", agent, "-o", "jsonl"])
        let steps = try Self.jsonLines(byStep.output)
        #expect(steps.map { "\($0["key"] ?? "")=\($0["count"] ?? "")" } == ["fetch=3", "parse=2"])

        let text = try await Self.baton(["dead", "list", "--group-by", "bucket", "--agent", agent])
        let rows = text.output.split(separator: "\n")
        #expect(rows.first?.hasPrefix("BUCKET") == true && rows.count == 3)

        let letters = try await Self.baton(["dead", "list", "--agent", agent, "--json"])
        let items = try #require(try Self.json(letters.output)["items"] as? [[String: Any]])
        #expect(items.count == 5)
        #expect(items.filter { $0["fingerprint"] as? String == fingerprint }.count == 3)

        // The group record counts the three; a discard uncounts one.
        func recordedCount() async throws -> Int {
            try await Self.withStore { store in
                var total = 0
                for bucket in 0..<store.settings.keys.bucketCount {
                    let reply = try await store.redis.send(
                        "HGET", store.settings.keys.deadGroup(bucket: bucket, fingerprint: fingerprint), "count")
                    total += Int(reply.string ?? "") ?? 0
                }
                return total
            }
        }
        #expect(try await recordedCount() == 3)
        let discard = try await Self.baton(["dead", "discard", made[0].letter, "--reason", "cli test", "--actor", "tester"])
        #expect(discard.status == 0, "\(discard.error)")
        #expect(try await recordedCount() == 2)
        let after = try await Self.baton(["dead", "list", "--group-by", "fingerprint", "--fingerprint", fingerprint, "--json"])
        #expect((try Self.json(after.output)["items"] as? [[String: Any]])?.first?["count"] as? Int == 2)

        // The same dead letter taken in twice (a redelivery) is stored and counted once.
        let again = try await Self.withStore { store in
            try await store.recordDeadLetter(["id": made[1].letter, "reason": "retries_exhausted", "error": "x", "agent": agent])
        }
        #expect(again.stored == false)
        #expect(try await recordedCount() == 2)
    }

    @Test(.enabled(if: TestServers.available)) func bulkRedriveDryRunChangesNothingAndARealRunRedrivesExactlyTheMatches() async throws {
        let agent = TestServers.uniqueName("cli-bulk")
        let queue = TestServers.uniqueName("cli-bulk-q")
        let fetch = Failure(step: "fetch", bucket: "provider_5xx") { "HTTP 503 for \($0)" }
        let other = Failure(step: "other", bucket: "provider_5xx") { "HTTP 503 for \($0)" }
        let made = try await Self.deadLetters(agent: agent, queue: queue, [fetch, fetch, fetch, other])
        let targets = Array(made.prefix(3))
        let reason = TestServers.uniqueName("cli bulk reason")

        try await Self.withStepQueue(queue) { channel in
            let dry = try await Self.baton([
                "dead", "redrive", "--agent", agent, "--step", "fetch", "--reason", reason, "--dry-run", "-o", "json",
            ])
            #expect(dry.status == 0, "\(dry.error)")
            let preview = try Self.json(dry.output)
            #expect(preview["dry_run"] as? Bool == true)
            #expect(preview["count"] as? Int == 3)
            #expect(Set((preview["samples"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }) == Set(targets.map(\.letter)))
            let dryText = try await Self.baton(["dead", "redrive", "--agent", agent, "--step", "fetch", "--reason", reason, "--dry-run"])
            #expect(dryText.output.hasPrefix("dry run: would redrive 3 dead letters"))

            // Nothing changed: the tasks are still dead-lettered, the letters still there, no audit entry.
            try await Harness.withClient { (client: BatonClient) async throws in
                for pair in made {
                    #expect(try await client.queries.task(pair.task)?.status == "dead_lettered")
                    #expect(try await client.queries.deadLetter(pair.letter) != nil)
                }
                #expect(try await client.queries.auditEntries(limit: 500).allSatisfy { $0.reason != reason })
            }
            #expect(try await channel.inspectQueue(Topology.stepsQueue(queue)).messageCount == 0)

            // --all selects everything (a dry run here: it changes nothing).
            let all = try await Self.baton(["dead", "discard", "--all", "--reason", reason, "--dry-run", "-o", "json"])
            #expect(all.status == 0, "\(all.error)")
            #expect((try Self.json(all.output)["count"] as? Int ?? 0) >= made.count)
            #expect(try Self.json(all.output)["filter"] as? String == "all")

            // Without --yes and without a terminal, a bulk action is refused.
            let unconfirmed = try await Self.baton(["dead", "redrive", "--agent", agent, "--step", "fetch", "--reason", reason])
            #expect(unconfirmed.status == 64)
            #expect(unconfirmed.error.contains("--yes"))

            let real = try await Self.baton([
                "dead", "redrive", "--agent", agent, "--step", "fetch", "--reason", reason, "--actor", "ana@ops", "--yes", "-o", "json",
            ])
            #expect(real.status == 0, "\(real.error)")
            let reports = try #require(try Self.json(real.output)["items"] as? [[String: Any]])
            #expect(Set(reports.compactMap { $0["id"] as? String }) == Set(targets.map(\.letter)))
            #expect(
                reports.allSatisfy { $0["result"] as? String == "done" && $0["status"] as? String == "queued" && $0["branch"] as? Int == 1 }
            )
            #expect(real.error.contains("redrive: 3/3"))

            try await Harness.withClient { (client: BatonClient) async throws in
                for pair in targets {
                    let view = try #require(try await client.queries.task(pair.task))
                    #expect(view.status == "queued")
                    #expect(view.branch == 1)
                    let redriven = try await client.queries.history(pair.task).filter { $0.type == "redriven" }
                    #expect(redriven.count == 1)
                    #expect(redriven.first?.branch == 1)
                    #expect(redriven.first?.data?["actor"]?.stringValue == "ana@ops")
                    #expect(redriven.first?.data?["reason"]?.stringValue == reason)
                    #expect(try await client.queries.deadLetter(pair.letter) == nil)
                }
                // The letter that did not match is untouched.
                #expect(try await client.queries.task(made[3].task)?.status == "dead_lettered")
                #expect(try await client.queries.deadLetter(made[3].letter) != nil)
            }

            // One step message per redriven task, on branch 1.
            let messages = try await Self.stepMessages(channel, queue: queue, count: 3)
            #expect(Set(messages.map(\.task)) == Set(targets.map(\.task)))
            #expect(messages.allSatisfy { $0.branch == 1 && $0.step == "fetch" })

            // One audit entry for the call: actor, action, filter, count, reason.
            let audit = try await Self.baton(["audit", "--limit", "200", "-o", "json"])
            #expect(audit.status == 0)
            let entries = try #require(try Self.json(audit.output)["items"] as? [[String: Any]])
            let mine = entries.filter { $0["reason"] as? String == reason }
            #expect(mine.count == 1)
            let entry = try #require(mine.first)
            #expect(entry["actor"] as? String == "ana@ops")
            #expect(entry["action"] as? String == "dead.redrive")
            #expect(entry["count"] as? Int == 3)
            #expect(entry["filter"] as? String == "agent=\(agent) step=fetch")
            #expect(Set((entry["target"] as? String ?? "").split(separator: ",").map(String.init)) == Set(targets.map(\.letter)))

            // A bulk discard of what is left of the agent.
            let discard = try await Self.baton(["dead", "discard", "--agent", agent, "--reason", reason + " discard", "--yes", "-q"])
            #expect(discard.status == 0, "\(discard.error)")
            #expect(discard.output.split(separator: "\n") == [Substring(made[3].letter)])
        }
    }

    @Test(.enabled(if: TestServers.available)) func redriveWithAPatchMergesItIntoTheTaskInput() async throws {
        let agent = TestServers.uniqueName("cli-patch")
        let queue = TestServers.uniqueName("cli-patch-q")
        var failure = Failure(step: "fetch", bucket: "invalid_output") { "bad output for \($0)" }
        failure.input = #"{"a": 1, "b": {"c": 2, "d": 3}}"#
        let made = try await Self.deadLetters(agent: agent, queue: queue, [failure])
        try await Self.withStepQueue(queue) { channel in
            let result = try await Self.baton([
                "dead", "redrive", made[0].letter, "--reason", "fixed the prompt", "--patch", #"{"b": {"c": null, "e": 4}, "f": "x"}"#,
            ])
            #expect(result.status == 0, "\(result.error)")
            #expect(result.output == "\(made[0].letter): redrive done (now queued on branch 1)\n")
            try await Harness.withClient { (client: BatonClient) async throws in
                let input = try await client.store.redis.send("HGET", client.store.settings.keys.task(made[0].task), "input").string ?? ""
                #expect(try JSONValue.parse(Array(input.utf8)) == ["a": 1, "b": ["d": 3, "e": 4], "f": "x"])
                let event = try #require(try await client.queries.history(made[0].task).last { $0.type == "redriven" })
                #expect(event.data?["input_patch"]?["f"] == "x")
                #expect(event.data?["previous_input"]?["b"]?["c"] == 2)
                #expect(try await client.queries.task(made[0].task)?.branch == 1)
            }
            #expect(try await Self.stepMessages(channel, queue: queue, count: 1).first?.branch == 1)
        }
    }

    @Test(.enabled(if: TestServers.available)) func redriveOfADeadSubmitWithAPatchRepublishesThePatchedSubmit() async throws {
        let agent = TestServers.uniqueName("cli-submit")
        let queue = TestServers.uniqueName("baton.cli-submit-q")
        let submit = JSONValue.object(["v": 1, "agent": .string(agent), "input": ["a": 1, "b": 2]])
        let (letter, _) = try await Self.withStore { store in
            try await store.recordDeadLetter([
                "reason": "unknown_agent", "error": "no worker serves agent '\(agent)'", "agent": agent, "body": submit.jsonString,
            ])
        }
        var configuration = try AMQPConfiguration(url: TestServers.amqpURL, connectionName: "baton-cli-operator-tests")
        configuration.connectTimeout = .seconds(5)
        let connection = try await AMQPConnection.connect(configuration, logger: Self.logger)
        do {
            let channel = try await connection.openChannel()
            try await channel.declareQueue(queue, durable: false)
            try await channel.bindQueue(queue, exchange: Topology.submitExchange, routingKey: agent)
            let result = try await Self.baton(["dead", "redrive", letter, "--reason", "agent deployed", "--patch", #"{"b": null, "c": 3}"#])
            #expect(result.status == 0, "\(result.error)")
            #expect(try await channel.inspectQueue(queue).messageCount == 1)
            let consumer = try await channel.consume(queue: queue)
            var iterator = consumer.deliveries.makeAsyncIterator()
            let delivery = try #require(await iterator.next())
            let body = try JSONValue.parse(delivery.body)
            #expect(body["input"] == ["a": 1, "c": 3])
            #expect(body["agent"]?.stringValue == agent)
            try await channel.ack(delivery)
            _ = try? await channel.deleteQueue(queue)
        } catch {
            if let channel = try? await connection.openChannel() { _ = try? await channel.deleteQueue(queue) }
            await connection.close()
            throw error
        }
        await connection.close()
        let show = try await Self.baton(["dead", "show", letter])
        #expect(show.status == 4, "the redriven letter is gone")
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(3)))
    func aWorkerRunsTheRedrivenBranchWithThePatchedInput() async throws {
        try await Harness.withClient { (client: BatonClient) async throws in
            let worker = try await Harness.startWorker("cli-patch", client: client)
            defer { worker.process.sigkill() }
            // 64 KiB records overflow the 1 MiB checkpoint cap at the 16th step: dead-lettered as oversized.
            let id = try await Harness.submit(
                client, Harness.stepchain(id: TestServers.uniqueName("cli-patch-e2e"), steps: 20, recordBytes: 65536, costUSDPerStep: 0.001)
            )
            _ = try await Harness.waitForStatus(client, id, ["dead_lettered"], workers: [worker])
            let found = try await Harness.waitForDeadLetter(client) { $0.taskID == id }
            let letter = try #require(found, "no dead letter for \(id)")

            let result = try await Self.baton([
                "dead", "redrive", letter.id, "--reason", "smaller records", "--patch", #"{"record_bytes": 64}"#,
            ])
            #expect(result.status == 0, "\(result.error)")
            let done = try await Harness.waitForStatus(client, id, ["succeeded"], timeout: .seconds(60), workers: [worker])
            #expect(done.branch == 1)
            let records = try await Harness.records(client, id)
            #expect(records.count == 20)
            #expect(records.prefix(15).allSatisfy { $0.utf8.count == 65536 })
            #expect(records.suffix(5).allSatisfy { $0.utf8.count == 64 }, "the redriven branch ran with the patched input")
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func checkpointDiffIsTheMergePatchBetweenTwoCheckpoints() async throws {
        try await Harness.withClient { (client: BatonClient) async throws in
            let worker = try await Harness.startWorker("cli-diff", client: client)
            defer { worker.process.sigkill() }
            let id = try await Harness.submit(client, Harness.stepchain(id: TestServers.uniqueName("cli-diff"), steps: 3, recordBytes: 16))
            let done = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            let from = try #require(try await client.queries.checkpoint(id, seq: 1))
            let to = try #require(try await client.queries.checkpoint(id, seq: done.seq))

            let result = try await Self.baton(["checkpoint", id, "--diff", "1..", "-o", "json"])
            #expect(result.status == 0, "\(result.error)")
            let object = try Self.json(result.output)
            #expect(object["from"] as? Int == 1)
            #expect(object["to"] as? Int == Int(done.seq))
            let patch = try JSONValue.parse(Array(try JSONSerialization.data(withJSONObject: object["patch"] ?? [:])))
            let before = try JSONValue.parse(Array(from.json.utf8))
            let after = try JSONValue.parse(Array(to.json.utf8))
            #expect(before != after)
            #expect(before.applyingMergePatch(patch) == after)

            let missing = try await Self.baton(["checkpoint", id, "--diff", "1..99"])
            #expect(missing.status == 4)
            let bad = try await Self.baton(["checkpoint", id, "--diff", "x..y"])
            #expect(bad.status == 64)
        }
    }

    @Test(.enabled(if: TestServers.available)) func checkpointPrintsTheStateAndExits4WhenMissing() async throws {
        let (_, ids) = try await CLITests.cancelledTasks(1)
        let text = try await Self.baton(["checkpoint", ids[0]])
        #expect(text.status == 0, "\(text.error)")
        #expect(text.output.contains("\"records\" : ["), "indented JSON: \(text.output)")
        let json = try await Self.baton(["checkpoint", ids[0], "--seq", "0", "-o", "json"])
        let object = try Self.json(json.output)
        #expect(object["task_id"] as? String == ids[0])
        #expect(object["seq"] as? Int == 0)
        #expect((object["state"] as? [String: Any])?["records"] is [Any])
        let jsonl = try await Self.baton(["checkpoint", ids[0], "-o", "jsonl"])
        #expect(jsonl.output.split(separator: "\n").count == 1)

        let missingSeq = try await Self.baton(["checkpoint", ids[0], "--seq", "99"])
        #expect(missingSeq.status == 4)
        #expect(missingSeq.error.contains("seq 99"))
        let missingTask = try await Self.baton(["checkpoint", TestServers.uniqueName("cli-missing")])
        #expect(missingTask.status == 4)
        #expect(missingTask.output.isEmpty)
    }

    @Test(.enabled(if: TestServers.available)) func cancelIsAuditedWithItsActor() async throws {
        let (_, ids) = try await CLITests.cancelledTasks(1)
        // A second fixture that is still live, so the cancel succeeds.
        let id = TestServers.uniqueName("cli-audit")
        try await Self.withStore { store in
            _ = try await store.submit(
                NewTask(
                    id: id, agent: "stepchain", inputJSON: "{}", stateJSON: "{}", firstStep: "append",
                    queue: TestServers.uniqueName("cli-q"),
                    limits: BudgetLimits(maxSteps: 5, maxAttempts: 1)))
            try await store.outboxDone(task: id, ids: Array(try await store.pendingOutbox(task: id).keys))
        }
        let reason = TestServers.uniqueName("cli audit")
        let cancel = try await Self.baton(["cancel", id, "--reason", reason, "--actor", "bob@ops"])
        #expect(cancel.status == 0, "\(cancel.error)")
        let conflict = try await Self.baton(["cancel", ids[0], "--reason", reason, "--actor", "bob@ops"])
        #expect(conflict.status == 5)
        let audit = try await Self.baton(["audit", "--limit", "500", "-o", "jsonl"])
        let mine = try Self.jsonLines(audit.output).filter { $0["reason"] as? String == reason }
        #expect(mine.count == 1, "only the cancel that happened is audited")
        #expect(mine.first?["actor"] as? String == "bob@ops")
        #expect(mine.first?["action"] as? String == "cancel")
        #expect(mine.first?["target"] as? String == id)
        let text = try await Self.baton(["audit", "--limit", "1"])
        #expect(text.output.hasPrefix("WHEN"))
    }

    @Test(.enabled(if: TestServers.available)) func queuesShowsCountsAndWarnsOfAQueueWithoutConsumer() async throws {
        let queue = TestServers.uniqueName("cli-queues")
        let name = Topology.stepsQueue(queue)
        let missing = TestServers.uniqueName("baton.cli-missing")
        try await Self.withStepQueue(queue) { channel in
            _ = channel
            try await Harness.publish([
                Harness.message(exchange: Topology.stepsExchange, routingKey: queue, body: Array("{}".utf8)),
                Harness.message(exchange: Topology.stepsExchange, routingKey: queue, body: Array("{}".utf8)),
            ])
            // Through a passive queue.declare (no local rabbitmqctl: an empty services folder), and through rabbitmqctl
            // when the broker is the node `baton services` runs here (the test servers usually are).
            let noServices = FileManager.default.temporaryDirectory.appendingPathComponent("baton-no-services-\(UUID().uuidString)").path
            for environment in [["BATON_SERVICES_DIR": noServices], [:]] {
                let result = try await Self.baton(["queues", "--queue", name, "--queue", missing, "-o", "json"], environment: environment)
                #expect(result.status == 0, "\(result.error)")
                let items = try #require(try Self.json(result.output)["items"] as? [[String: Any]])
                #expect(items.contains { $0["queue"] as? String == Topology.deadQueue })
                let mine = try #require(items.first { $0["queue"] as? String == name })
                #expect(mine["exists"] as? Bool == true)
                #expect(mine["ready"] as? Int == 2)
                #expect(mine["consumers"] as? Int == 0)
                #expect((mine["warning"] as? String)?.contains("no live consumer") == true)
                if environment.isEmpty {
                    #expect(["rabbitmqctl", "queue.declare"].contains(mine["source"] as? String))
                } else {
                    #expect(mine["source"] as? String == "queue.declare")
                }
                if mine["source"] as? String == "rabbitmqctl" {
                    #expect(mine["unacked"] as? Int == 0)
                } else {
                    #expect(mine["unacked"] is NSNull, "not available without the management plugin")
                }
                #expect(mine["oldest_message_age_s"] is NSNull, "Baton's publishers set no timestamp")
                let absent = try #require(items.first { $0["queue"] as? String == missing })
                #expect(absent["exists"] as? Bool == false)
            }

            let jsonl = try await Self.baton(["queues", "--queue", name, "-o", "jsonl"])
            let lines = try Self.jsonLines(jsonl.output)
            #expect(lines.contains { $0["queue"] as? String == name && $0["ready"] as? Int == 2 })
            // doctor: a step queue at 80 % of its cap is a problem (a cap of 2 here), a queue with messages and no
            // consumer a warning.
            let doctor = try await Self.baton(
                ["doctor", "-o", "json"], environment: ["BATON_QUEUES_STEP_MAX_LENGTH": "2", "BATON_WORKER_QUEUES": queue])
            #expect(doctor.status == 1)
            let checks = try #require(try Self.json(doctor.output)["items"] as? [[String: Any]])
            let headroom = try #require(checks.first { $0["check"] as? String == "queue_headroom" })
            #expect(headroom["status"] as? String == "problem")
            #expect((headroom["detail"] as? String)?.contains(name) == true)
            #expect((headroom["fix"] as? String)?.contains("queues.step_max_length") == true)
            #expect(checks.first { $0["check"] as? String == "queue_consumers" }?["status"] as? String == "warning")

            let text = try await Self.baton(["queues", "--queue", name], environment: ["BATON_SERVICES_DIR": noServices])
            #expect(text.output.hasPrefix("QUEUE"))
            #expect(text.output.contains("no live consumer"))
            #expect(text.error.contains("management plugin"))
        }
    }

    /// The intake of dead letters in-process, on a delivery of a queue of the test's own (on the shared servers,
    /// `baton.dead` is consumed by whichever worker runs, possibly another version).
    @Test(.enabled(if: TestServers.available)) func theIntakeStoresTheFingerprintAndCountsARedeliveryOnce() async throws {
        let agent = TestServers.uniqueName("cli-intake")
        let task = TestServers.uniqueName("cli-intake-task")
        let queue = TestServers.uniqueName("baton.cli-intake-q")
        let error = "HTTP 503 from \"api.example.com\" after 1234 ms for \(task)"
        let headers: AMQPTable = [
            "x-baton-reason": .string("retries_exhausted"), "x-baton-error": .string(error), "x-baton-task": .string(task),
            "x-baton-agent": .string(agent), "x-baton-step": .string("fetch"), "x-baton-seq": .string("4"),
            "x-baton-bucket": .string("provider_5xx"), "x-baton-dead-at": .string("2026-11-22T10:00:00.000Z"),
        ]
        var properties = AMQPProperties.persistentJSON
        properties.headers = headers
        let body = JSONValue.object([
            "v": 1, "task": .string(task), "agent": .string(agent), "step": "fetch", "seq": 4, "branch": 0, "attempt": 3,
        ])
        var configuration = try AMQPConfiguration(url: TestServers.amqpURL, connectionName: "baton-cli-operator-tests")
        configuration.connectTimeout = .seconds(5)
        let connection = try await AMQPConnection.connect(configuration, logger: Self.logger)
        let delivery: AMQPDelivery
        do {
            let channel = try await connection.openChannel(confirms: true)
            try await channel.declareQueue(queue, durable: false)
            try await channel.publish(
                AMQPMessage(exchange: "", routingKey: queue, body: Array(body.jsonString.utf8), properties: properties))
            let consumer = try await channel.consume(queue: queue)
            var iterator = consumer.deliveries.makeAsyncIterator()
            delivery = try #require(await iterator.next())
            try await channel.ack(delivery)
            _ = try? await channel.deleteQueue(queue)
        } catch {
            if let channel = try? await connection.openChannel() { _ = try? await channel.deleteQueue(queue) }
            await connection.close()
            throw error
        }
        await connection.close()

        try await Harness.withClient { (client: BatonClient) async throws in
            let intake = DeadLetterIntake(store: client.store, logger: Self.logger)
            try await intake.take(delivery)
            try await intake.take(delivery)  // redelivered: stored and counted once

            let found = try await client.queries.deadLetters(matching: DeadLetterFilter(agent: agent)).items
            #expect(found.count == 1)
            let letter = try #require(found.first)
            let keys = client.store.settings.keys
            let bucket = keys.bucket(of: letter.id)
            let stored = try await client.store.redis.send("HGET", keys.deadItem(bucket: bucket, id: letter.id), "fingerprint").string
            let expected = DeadLetterFingerprint.compute(
                agent: agent, step: "fetch", bucket: "provider_5xx", reason: "retries_exhausted",
                message: "HTTP 503 from \"elsewhere\" after 7 ms for \(task)", taskID: task)
            #expect(stored == expected, "the same failure with other numbers, host and task has the same fingerprint")
            let group = try await client.store.redis.send("HGETALL", keys.deadGroup(bucket: bucket, fingerprint: expected))
            let record = TaskQueries.hash(group)
            #expect(record["count"] == "1")
            #expect(record["sample"] == error)
            #expect(record["agent"] == agent && record["step"] == "fetch" && record["bucket"] == "provider_5xx")

            let listed = try await Self.baton(["dead", "list", "--group-by", "fingerprint", "--agent", agent, "-o", "json"])
            let groups = try #require(try Self.json(listed.output)["items"] as? [[String: Any]])
            #expect(groups.count == 1 && groups.first?["count"] as? Int == 1 && groups.first?["key"] as? String == expected)

            let discard = try await Self.baton(["dead", "discard", "--agent", agent, "--reason", "cli test cleanup", "--yes"])
            #expect(discard.status == 0, "\(discard.error)")
            #expect(try await client.store.redis.send("EXISTS", keys.deadGroup(bucket: bucket, fingerprint: expected)).int == 0)
        }
    }

    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func withALiveWorkerQueuesListItsSubmitQueuesAndDoctorPasses() async throws {
        try await Harness.withClient { (client: BatonClient) async throws in
            let worker = try await Harness.startWorker("cli-operator", client: client)
            defer { worker.process.sigkill() }

            // The worker announces its agents: their submit queues are listed, with a consumer.
            // (Polled: the broker's consumer count can trail a consumer's (re)registration.)
            var consumers = 0
            let listed = try await eventually(timeout: .seconds(15), interval: .milliseconds(500)) {
                let queues = try await Self.baton(["queues", "-o", "json"])
                let items = try Self.json(queues.output)["items"] as? [[String: Any]] ?? []
                let submit = items.first { $0["queue"] as? String == Topology.submitQueue(agent: "flaky") }
                consumers = submit?["consumers"] as? Int ?? 0
                return consumers >= 1
            }
            #expect(
                listed,
                "baton.submit.flaky has \(consumers) consumers; worker running: \(worker.process.isRunning)\n\(worker.log.suffix(2000))")

            // The shared servers are set up as Baton needs them and a worker is live: every check passes.
            let doctor = try await Self.baton(["doctor", "-o", "json"])
            let report = try Self.json(doctor.output)
            let problems = (report["items"] as? [[String: Any]] ?? []).filter { $0["status"] as? String == "problem" }
            #expect(doctor.status == 0, "problems: \(problems)")
            #expect(report["ok"] as? Bool == true)
            // `baton services` runs Redis with the recommended hash-max-listpack-value.
            let memory = (report["items"] as? [[String: Any]] ?? []).first { $0["check"] as? String == "redis_memory" }
            #expect(memory?["status"] as? String == "ok", "redis_memory: \(String(describing: memory))")
        }
    }

    @Test(.enabled(if: TestServers.available)) func doctorComparesConsumerTimeoutWithTheTimeSliceOrSaysUnknown() async throws {
        func consumerTimeout(_ environment: [String: String]) async throws -> [String: Any] {
            let result = try await Self.baton(["doctor", "-o", "json"], environment: environment)
            let checks = try #require(try Self.json(result.output)["items"] as? [[String: Any]], "\(result.error)")
            return try #require(checks.first { $0["check"] as? String == "consumer_timeout" })
        }
        // A 2 h time slice is above RabbitMQ 3.10's default consumer_timeout (30 min).
        let long = try await consumerTimeout(["BATON_WORKER_TIME_SLICE": "2h"])
        if long["status"] as? String == "problem" {
            #expect((long["detail"] as? String)?.contains("7200000") == true)
            #expect((long["fix"] as? String)?.contains("consumer_timeout") == true)
        } else {
            // The broker is not the local node of `baton services` here: the setting cannot be read.
            #expect(long["status"] as? String == "unknown")
        }
        // Without the services folder (no Erlang cookie) it is never guessed.
        let noServices = FileManager.default.temporaryDirectory.appendingPathComponent("baton-no-services-\(UUID().uuidString)").path
        let unknown = try await consumerTimeout(["BATON_WORKER_TIME_SLICE": "2h", "BATON_SERVICES_DIR": noServices])
        #expect(unknown["status"] as? String == "unknown")
        #expect((unknown["detail"] as? String)?.contains("baton services") == true)
    }

    @Test(.enabled(if: TestServers.available)) func doctorReportsAOFOffWithTheFix() async throws {
        let redis = try ThrowawayRedis.start()
        defer { redis.stop() }
        let url = "redis://127.0.0.1:\(redis.port)/0"
        let ready = await eventually(timeout: .seconds(20)) { PortProbe.isOpen(port: redis.port) }
        #expect(ready, "redis-server did not start: \(redis.log)")

        let result = try await Self.baton(["doctor", "--redis", url, "-o", "json"])
        #expect(result.status == 1, "\(result.output) \(result.error)")
        let report = try Self.json(result.output)
        #expect(report["ok"] as? Bool == false)
        let checks = try #require(report["items"] as? [[String: Any]])
        let aof = try #require(checks.first { $0["check"] as? String == "redis_aof" })
        #expect(aof["status"] as? String == "problem")
        #expect((aof["fix"] as? String)?.contains("appendonly yes") == true)
        #expect(checks.first { $0["check"] as? String == "redis" }?["status"] as? String == "ok")
        #expect(checks.first { $0["check"] as? String == "rabbitmq" }?["status"] as? String == "ok")
        #expect(checks.first { $0["check"] as? String == "workers" }?["status"] as? String == "problem", "no worker uses this Redis")

        let text = try await Self.baton(["doctor", "--redis", url])
        #expect(text.status == 1)
        #expect(text.output.contains("PROBLEM  redis_aof"))
        #expect(text.output.contains("fix: enable AOF: CONFIG SET appendonly yes / appendonly yes in redis.conf"))

        let unreachable = try await Self.baton(["doctor", "--redis", "redis://127.0.0.1:1/0", "-o", "jsonl"])
        #expect(unreachable.status == 1)
        let first = try #require(try Self.jsonLines(unreachable.output).first)
        #expect(first["check"] as? String == "redis" && first["status"] as? String == "problem")
    }
}

/// A redis-server of the test's own on a free loopback port, AOF off, no snapshots, its files in a temporary
/// folder: the shared Redis's configuration is never changed.
final class ThrowawayRedis: Sendable {
    let port: Int
    let process: Process
    let directory: URL

    var log: String { (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? "" }

    init(port: Int, process: Process, directory: URL) {
        self.port = port
        self.process = process
        self.directory = directory
    }

    static func start() throws -> ThrowawayRedis {
        let port = try TestPorts.free()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-doctor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = [
            "--port", String(port), "--bind", "127.0.0.1", "--appendonly", "no", "--save", "", "--dir", directory.path, "--logfile",
            directory.appendingPathComponent("redis.log").path,
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return ThrowawayRedis(port: port, process: process, directory: directory)
    }

    /// Kills the server (Foundation reaps it) and removes its folder.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }
}
