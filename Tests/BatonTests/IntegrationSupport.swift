import AMQPClient
import BatonExamples
import Foundation
import Logging
import RedisClient
import Synchronization
import TestSupport
import Testing

@testable import Baton

/// Shared helpers of the worker integration tests (``IntegrationTests``): real `baton worker` child processes
/// on the servers of `scripts/test`, a client, polls with deadlines.
enum Harness {
    /// The keys matching a `SCAN` pattern (never `KEYS`), over the whole keyspace.
    static func scanKeys(_ redis: RedisConnection, matching pattern: String) async throws -> [String] {
        var cursor = "0"
        var found: [String] = []
        repeat {
            let parts = try await redis.send("SCAN", cursor, "MATCH", pattern, "COUNT", 1000).array ?? []
            cursor = parts.first?.string ?? "0"
            found += (parts.dropFirst().first?.array ?? []).compactMap(\.string)
        } while cursor != "0"
        return found
    }

    static let logger = Logger(label: "baton.integration-tests")

    /// The `baton` binary, or a recorded failure.
    static func baton() throws -> String {
        try #require(BatonBinary.path, "the baton binary is not built (run `swift build` first; scripts/test does)")
    }

    /// The environment of child processes: this one's, with the test servers and without a crash point.
    static func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["BATON_AMQP_URL"] = TestServers.amqpURL
        environment["BATON_REDIS_URL"] = TestServers.redisURL
        environment["BATON_CRASH_POINT"] = nil
        environment["NO_COLOR"] = "1"
        for (key, value) in extra { environment[key] = value }
        return environment
    }

    /// A started worker and its id.
    struct Worker {
        let id: String
        let process: WorkerProcess
        var log: String { process.output }
    }

    /// Starts `baton worker` with a 3 s lease (unless `lease` says otherwise), waits until its heartbeat is in Redis.
    static func startWorker(
        _ name: String, client: BatonClient, crashPoint: String? = nil, arguments: [String] = [], drainTimeout: Int = 3,
        lease: Int = 3, environment moreEnvironment: [String: String] = [:]
    ) async throws -> Worker {
        let id = TestServers.uniqueName("it-\(name)")
        var extra: [String: String] = moreEnvironment
        if let crashPoint { extra["BATON_CRASH_POINT"] = crashPoint }
        let process = try WorkerProcess.start(
            executable: try baton(),
            arguments: ["worker", "--id", id, "--lease", String(lease), "--drain-timeout", String(drainTimeout)] + arguments,
            environment: environment(extra), outputFile: try TestFiles.path("worker-\(name)") + ".log")
        return try await registered(process, id: id, client: client)
    }

    /// Waits until the worker child `process` has registered (its heartbeat is in Redis); otherwise kills it
    /// and fails with the end of its log.
    static func registered(_ process: WorkerProcess, id: String, client: BatonClient, timeout: Duration = .seconds(20)) async throws
        -> Worker
    {
        let worker = Worker(id: id, process: process)
        let registered = try await eventually(timeout: timeout) {
            guard process.isRunning else { return true }
            return try await client.queries.workers().contains { $0.id == id }
        }
        guard registered, process.isRunning else {
            process.sigkill()
            Issue.record("worker \(id) did not start:\n\(worker.log.suffix(3000))")
            throw SpawnError(message: "worker \(id) did not start")
        }
        return worker
    }

    /// Connects a client (Redis and RabbitMQ), runs `body`, closes it.
    static func withClient<T>(_ body: (BatonClient) async throws -> T) async throws -> T {
        let client = try await BatonClient.connect(
            amqpURL: TestServers.amqpURL, redisURL: TestServers.redisURL, publishing: true, logger: logger)
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }

    /// Polls until the task's status is in `statuses`; records an issue with the workers' logs otherwise.
    @discardableResult
    static func waitForStatus(
        _ client: BatonClient, _ id: String, _ statuses: Set<String>, timeout: Duration = .seconds(30), workers: [Worker] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> TaskView {
        var last: TaskView?
        let reached = try await eventually(timeout: timeout, interval: .milliseconds(50)) {
            last = try await client.queries.task(id)
            return last.map { statuses.contains($0.status) } ?? false
        }
        guard reached, let view = last else {
            let logs = workers.map { "--- worker \($0.id) (exit \(String(describing: $0.process.exitStatus))):\n\($0.log.suffix(4000))" }
            let state = last.map { "\($0.status) at seq \($0.seq)" } ?? "missing"
            let text = "task \(id) did not reach \(statuses.sorted()) within \(timeout): \(state)\n" + logs.joined(separator: "\n")
            Issue.record(Comment(rawValue: text), sourceLocation: sourceLocation)
            throw SpawnError(message: "task \(id) did not reach \(statuses.sorted())")
        }
        return view
    }

    /// Submits through the client and requires a reply that accepts it: `queued`, or the task's status when the
    /// submit was delivered twice.
    ///
    /// Every test's workers consume the shared submit queues, and every test SIGKILLs its workers when it ends. A
    /// worker killed after it created the task and before it replied leaves the submit to be redelivered; the worker
    /// that takes it then replies with the status the task has by then (DESIGN.md §6: resubmitting an id is a no-op),
    /// which may be `running` already. A CI run on 2026-11-23 saw exactly that.
    static func submit(_ client: BatonClient, _ request: SubmitRequest, sourceLocation: SourceLocation = #_sourceLocation) async throws
        -> String
    {
        let reply = try await client.submit(request, replyTimeout: .seconds(20))
        #expect(reply.error == nil, "submit refused: \(String(describing: reply.error))", sourceLocation: sourceLocation)
        let status = reply.status ?? "none"
        #expect(
            status == "running" || TaskQueries.indexedStatuses.contains(status), "submit reply status \(status)",
            sourceLocation: sourceLocation)
        return reply.taskID
    }

    /// Publishes raw messages (persistent JSON, confirmed) on a connection of its own.
    static func publish(_ messages: [AMQPMessage]) async throws {
        var configuration = try AMQPConfiguration(url: TestServers.amqpURL, connectionName: "baton-integration-test")
        configuration.connectTimeout = .seconds(5)
        let connection = try await AMQPConnection.connect(configuration, logger: logger)
        do {
            let channel = try await connection.openChannel(confirms: true)
            let results = try await channel.publish(messages)
            for result in results { if let result { throw result } }
            await connection.close()
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Deletes a queue a test declared for itself.
    static func deleteQueue(_ name: String) async throws {
        let connection = try await AMQPConnection.connect(
            try AMQPConfiguration(url: TestServers.amqpURL, connectionName: "baton-integration-test"), logger: logger)
        defer { Task { await connection.close() } }
        let channel = try await connection.openChannel()
        _ = try await channel.deleteQueue(name)
    }

    static func message(exchange: String, routingKey: String, body: [UInt8]) -> AMQPMessage {
        AMQPMessage(exchange: exchange, routingKey: routingKey, body: body, properties: AMQPProperties.persistentJSON)
    }

    static func message(_ outbox: OutboxMessage) -> AMQPMessage {
        message(exchange: outbox.exchange, routingKey: outbox.routingKey, body: Array(outbox.body.utf8))
    }

    /// Polls the dead letters (taken into Redis by a worker) for one that `matches`.
    static func waitForDeadLetter(
        _ client: BatonClient, timeout: Duration = .seconds(20), sourceLocation: SourceLocation = #_sourceLocation,
        _ matches: @escaping (DeadLetterView) -> Bool
    ) async throws -> DeadLetterView? {
        var found: DeadLetterView?
        _ = try await eventually(timeout: timeout, interval: .milliseconds(100)) {
            found = try await client.queries.deadLetters(limit: 1000).first(where: matches)
            return found != nil
        }
        return found
    }

    /// The `records` of a `stepchain` checkpoint.
    static func records(_ client: BatonClient, _ id: String, seq: Int64? = nil) async throws -> [String] {
        let checkpoint = try #require(try await client.queries.checkpoint(id, seq: seq), "no checkpoint of \(id)")
        let state = try JSONValue.parse(Array(checkpoint.json.utf8))
        return (state["records"]?.arrayValue ?? []).compactMap(\.stringValue)
    }

    /// The seqs of the commit events (`step_committed` and the final one) of a task's history on `branch`.
    static func commitSeqs(_ events: [TaskEvent], branch: Int64 = 0) -> [Int64] {
        let types: Set<String> = ["step_committed", "succeeded", "failed", "budget_exceeded", "handoff"]
        return events.filter { $0.branch == branch && types.contains($0.type) }.map(\.seq)
    }

    /// A `stepchain` submit.
    /// Creates the task of `request` with this build's code on step queue `queue` (its first step message, in its
    /// outbox, names `queue`) and takes that message out of the outbox without publishing it: the caller publishes or
    /// runs it. Taken at once, before any outbox sweep of another test could republish it.
    static func create(_ client: BatonClient, _ request: SubmitRequest, queue: String) async throws -> (id: String, first: [OutboxMessage])
    {
        let runner = try #require(AgentRegistry.examples[request.agent])
        let input = try JSONCoding.encode(request.input)
        let id = request.id ?? TaskID.generate()
        let task = NewTask(
            id: id, agent: request.agent, inputJSON: String(decoding: input, as: UTF8.self), stateJSON: try runner.initialState(input),
            firstStep: runner.steps[0], queue: queue, limits: BudgetLimits(request.budget, defaults: ProtocolSettings().defaultLimits),
            tenant: request.tenant ?? "")
        #expect(try await client.store.submit(task) == .created)
        let outbox = try await client.store.pendingOutbox(task: id)
        if outbox.isEmpty {
            // This test was held up past the outbox sweep's age (5 s: a loaded box runs the suite's tests on two cores)
            // and another test's worker republished the first step, to `queue` (the message names it). The task has not
            // moved; the caller gets the same message (a second copy is a duplicate delivery, which the claim settles).
            let view = try await TaskQueries(store: client.store).task(id)
            #expect(view?.status == "queued" && view?.seq == 0, "\(String(describing: view))")
            let message = StepMessage(task: id, agent: request.agent, step: runner.steps[0], seq: 0, branch: 0, attempt: 1)
            return (id, [OutboxMessage.step(message, queue: queue)])
        }
        #expect(outbox.values.map(\.routingKey) == [queue])
        try await client.store.outboxDone(task: id, ids: Array(outbox.keys))
        return (id, Array(outbox.values))
    }

    static func stepchain(
        id: String, steps: Int, recordBytes: Int = 64, tokensPerStep: Int64 = 7, costUSDPerStep: Double = 0.25, effectLog: String? = nil,
        budget: BudgetRequest? = nil
    ) -> SubmitRequest {
        var input: [String: JSONValue] = [
            "steps": .int(Int64(steps)), "record_bytes": .int(Int64(recordBytes)), "tokens_per_step": .int(tokensPerStep),
            "cost_usd_per_step": .double(costUSDPerStep),
        ]
        if let effectLog { input["effect_log"] = .string(effectLog) }
        return SubmitRequest(id: id, agent: "stepchain", input: .object(input), budget: budget)
    }
}

/// A ``MessageBus`` that keeps what it is given instead of publishing it (and confirms it): lets a test drive
/// a task's first steps in-process and hold its current step message.
final class CapturingBus: MessageBus {
    let messages = Mutex<[OutboxMessage]>([])

    func publish(_ messages: [OutboxMessage]) async -> [(any Error)?] {
        self.messages.withLock { $0.append(contentsOf: messages) }
        return messages.map { _ in nil }
    }

    /// The last step message (events the executor publishes itself are kept too, and may come after it).
    var last: OutboxMessage? { messages.withLock { $0.last { $0.exchange == Topology.stepsExchange } } }
}
