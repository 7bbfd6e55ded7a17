import AMQPClient
import Foundation
import Logging
import RedisClient

/// What the CLI (and any Swift program) uses to submit and steer tasks: Redis for the truth, RabbitMQ for
/// publishing submits and the outbox of operator actions.
public final class BatonClient: Sendable {
    public let store: RedisTaskStore
    public let queries: TaskQueries
    let amqp: AMQPConnection?
    let channel: AMQPChannel?
    let logger: Logger

    var redis: RedisConnection { store.redis }

    init(store: RedisTaskStore, amqp: AMQPConnection?, channel: AMQPChannel?, logger: Logger) {
        self.store = store
        self.queries = TaskQueries(store: store)
        self.amqp = amqp
        self.channel = channel
        self.logger = logger
    }

    /// Connects to Redis, and to RabbitMQ when `publishing` (submits, resume, redrive).
    public static func connect(
        amqpURL: String, redisURL: String, publishing: Bool, settings: RedisTaskStore.Settings = .init(), logger: Logger
    ) async throws -> BatonClient {
        let redis = try await RedisConnection.connect(configuration: try RedisConfiguration(url: redisURL), logger: logger)
        guard publishing else {
            return BatonClient(store: RedisTaskStore(redis: redis, settings: settings), amqp: nil, channel: nil, logger: logger)
        }
        do {
            var configuration = try AMQPConfiguration(url: amqpURL, connectionName: "baton-cli")
            configuration.connectTimeout = .seconds(5)
            let amqp = try await AMQPConnection.connect(configuration, logger: logger)
            let channel = try await amqp.openChannel(confirms: true)
            return BatonClient(store: RedisTaskStore(redis: redis, settings: settings), amqp: amqp, channel: channel, logger: logger)
        } catch {
            await redis.close()
            throw error
        }
    }

    public func close() async {
        await amqp?.close()
        await store.redis.close()
    }

    var bus: (any MessageBus)? { channel.map { AMQPBus(channel: $0) } }

    /// The answer to a submit: the task id and status, or the worker's error.
    public struct SubmitReply: Sendable {
        public var taskID: String
        /// `queued` (or the existing task's status), nil when no worker answered within the wait.
        public var status: String?
        public var error: (code: String, message: String)?
        /// What the worker wants the submitter to know: the task was created, but its first step found no queue.
        public var warning: String?
    }

    /// Publishes a submit to `baton.submit` (as any service would) and waits up to `replyTimeout` for a
    /// worker's reply.
    public func submit(_ request: SubmitRequest, replyTimeout: Duration = .seconds(10)) async throws -> SubmitReply {
        guard let amqp, let channel else { throw BatonError(.internalError, "this client was connected without RabbitMQ") }
        var request = request
        let id = request.id ?? TaskID.generate()
        request.id = id
        try request.validate()
        let replyChannel = try await amqp.openChannel()
        let replyQueue = "baton.reply.\(TaskID.generate())"
        try await replyChannel.declareQueue(replyQueue, durable: false, exclusive: true, autoDelete: true)
        let consumer = try await replyChannel.consume(queue: replyQueue, exclusive: true)
        defer { Task { try? await replyChannel.close() } }
        var properties = AMQPProperties.persistentJSON
        properties.replyTo = replyQueue
        properties.correlationID = id
        properties.messageID = id
        do {
            try await channel.publish(
                AMQPMessage(
                    exchange: Topology.submitExchange, routingKey: request.agent, body: try JSONCoding.encode(request),
                    properties: properties,
                    mandatory: true))
        } catch let error as AMQPError where error.code == .channelError && error.serverCode == 404 {
            throw BatonError(
                .connection,
                "RabbitMQ has no exchange '\(Topology.submitExchange)': start a worker once (`baton worker`) to declare the topology")
        } catch let error as AMQPError where error.code == .nacked {
            throw BatonError(.queueFull, "RabbitMQ refused the submit: the submit queue of agent '\(request.agent)' is full; retry later")
        }
        let reply: AMQPDelivery? = await withTaskGroup(of: AMQPDelivery?.self) { group in
            group.addTask {
                var iterator = consumer.deliveries.makeAsyncIterator()
                return await iterator.next()
            }
            group.addTask {
                try? await Task.sleep(for: replyTimeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let reply else { return SubmitReply(taskID: id, status: nil, error: nil) }
        try? await replyChannel.ack(reply)
        let json = (try? JSONValue.parse(reply.body)) ?? .null
        if let error = json["error"] {
            return SubmitReply(
                taskID: id, status: nil, error: (error["code"]?.stringValue ?? "error", error["message"]?.stringValue ?? error.jsonString))
        }
        return SubmitReply(
            taskID: json["task_id"]?.stringValue ?? id, status: json["status"]?.stringValue, error: nil,
            warning: json["warning"]?.stringValue)
    }

    /// The outcome of an operator action on one task.
    public enum ActionResult: Sendable, Equatable {
        /// Done: the task's new status.
        case done(String)
        /// Asked of a running step: it takes effect at its next boundary (or lease renewal).
        case requested
        case notFound
        /// The task's state forbids it (its status).
        case conflict(String)
    }

    /// Cancel, pause or resume a task (durable flags; DESIGN.md §5), recorded with actor and reason in the task's
    /// history and (unless `audit` is false) in the audit stream.
    public func act(_ action: String, task: String, reason: String, actor: String, audit: Bool = true) async throws -> ActionResult {
        try await act(action, task: task, reason: reason, actor: actor, audit: audit, input: "", details: "")
    }

    func act(_ action: String, task: String, reason: String, actor: String, audit: Bool, input: String, details: String) async throws
        -> ActionResult
    {
        let answer = try await store.control(task: task, action: action, reason: reason, actor: actor, extra: input, details: details)
        let result: ActionResult
        switch answer.first ?? "" {
        case "missing": return .notFound
        case "cancelled", "paused", "resumed", "redriven": result = .done(answer.dropFirst().first ?? "")
        case "requested": result = .requested
        case "already": result = .done(answer.dropFirst().first ?? "")
        default: result = .conflict(answer.dropFirst().first ?? answer.first ?? "")
        }
        if case .conflict = result { return result }
        if let bus, action == "resume" || action == "redrive" {
            await Outbox.flush(task: task, store: store, bus: bus, logger: logger)
        }
        if let bus, action == "cancel", let parent = TaskID.parent(of: task) {
            // The last child to end wakes its parent: publish the join step now rather than at the outbox sweep.
            await Outbox.flush(task: parent, store: store, bus: bus, logger: logger)
        }
        if audit { try await queries.audit(actor: actor, action: action, target: task, reason: reason) }
        return result
    }

    /// Forks a task: a new branch (branch += 1) from its kept checkpoint `seq`, resuming `step` (nil: the step
    /// that followed that checkpoint on the old path, as the history names it). Any status but `running`; the old
    /// path's events stay in the history, and a `forked` event records reason, actor, `from_seq`, `from_branch`.
    /// The step is published at once (else a worker's outbox sweep does) and the action is audited.
    public func fork(task: String, fromSeq seq: Int64, step: String? = nil, reason: String, actor: String) async throws -> ActionReport {
        let answer = try await store.control(
            task: task, action: "fork", reason: reason, actor: actor, extra: String(seq), expectedSeq: step ?? "")
        var report = ActionReport(id: task, action: "fork", outcome: .notFound, reason: reason)
        let second = answer.dropFirst().first ?? ""
        switch answer.first ?? "" {
        case "missing":
            report.message = "no such task"
        case "forked":
            report.result = "done"
            report.status = "queued"
            report.branch = Int64(second)
            report.seq = seq
            report.step = answer.dropFirst(2).first
            if let bus { await Outbox.flush(task: task, store: store, bus: bus, logger: logger) }
            try await queries.audit(actor: actor, action: "fork", target: task, reason: reason)
        case "no_checkpoint":
            report.message =
                "no checkpoint of seq \(seq) is kept"
                + (second.isEmpty ? "" : ": the kept seqs are \(second.split(separator: ",").joined(separator: ", "))")
        case "no_step":
            report.result = "usage"
            report.status = second
            report.message = "the history does not name the step that followed seq \(seq) (e.g. the task ended there): name it with --step"
        default:
            report.result = "conflict"
            report.status = second
            if second == "running" { report.message = "a step is running: pause or cancel the task, wait for the step to stop, then fork" }
        }
        return report
    }

    /// Raises a task's limits atomically (one script that checks the status first), recording a `budget_raised`
    /// event with actor and reason and an audit entry (`budget.raise`). A `needs_review` task resumes: its parked step
    /// is published at once (else a worker's outbox sweep does). Refused (`conflict`, nothing written) when the task
    /// ended, when the new limits are still reached (the message names the limit), or for a relative raise of a
    /// limit the task does not have.
    public func raiseBudget(task: String, _ raise: BudgetRaise, reason: String, actor: String) async throws -> ActionReport {
        let answer = try await store.raiseBudget(task: task, raise, reason: reason, actor: actor)
        var report = ActionReport(id: task, action: "budget", outcome: .notFound, reason: reason)
        let second = answer.dropFirst().first ?? ""
        switch answer.first ?? "" {
        case "missing":
            report.message = "no such task"
        case "raised", "resumed":
            report.result = "done"
            report.status = second
            if answer.first == "resumed", let bus { await Outbox.flush(task: task, store: store, bus: bus, logger: logger) }
            let text = raise.changes.map { "\($0.name)=\($0.relative ? "+" : "")\(Self.display($0))" }.joined(separator: ",")
            try await queries.audit(actor: actor, action: "budget.raise", target: task, filter: text, reason: reason)
        case "still":
            report.result = "conflict"
            let words = answer.dropFirst(2).first ?? "\(second) limit reached"
            if second == "tenant" {
                report.message =
                    "the task's tenant is still over its daily limit: \(words); raise it in the workers' configuration (tenants.<name>.*) or wait for the next UTC day"
            } else {
                let field = second == "cost" ? "max_cost" : second == "deadline" ? "deadline" : "max_" + second
                report.message = "with these limits the task is still over: \(words); raise \(BudgetRaise.name(ofField: field)) further"
            }
        case "no_limit":
            report.result = "conflict"
            report.message =
                "the task has no \(BudgetRaise.name(ofField: second)) limit to raise by a relative amount: give an absolute value"
        default:
            report.result = "conflict"
            report.status = second
            report.message = "the task already ended"
        }
        return report
    }

    static func display(_ change: BudgetRaise.Change) -> String {
        switch change.field {
        case "max_cost": String(format: "%g", Double(change.value) / 1_000_000)
        case "deadline" where change.relative: "\(change.value)ms"
        case "deadline": ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(change.value) / 1000))
        default: String(change.value)
        }
    }

    /// A tenant's spend today (UTC, the client's clock) against its daily limits.
    public struct TenantUsage: Sendable, Hashable {
        public var tenant: String
        public var costMicros: Int64
        public var tokens: Int64
        public var limits: TenantBudgets.Limits
    }

    /// The spend of `tenant` today, or nil when this client's configuration gives the tenant no daily limit.
    public func tenantUsage(_ tenant: String, now: Date = Date()) async throws -> TenantUsage? {
        guard let limits = store.settings.tenantBudgets.limits[tenant] else { return nil }
        let reply = try await redis.send("HMGET", store.tenantDayKey(tenant, day: now), "cost", "tokens")
        let values = (reply.array ?? []).map { $0.string.flatMap { Int64($0) } ?? 0 }
        return TenantUsage(
            tenant: tenant, costMicros: values.first ?? 0, tokens: values.count > 1 ? values[1] : 0, limits: limits)
    }

    /// Ends a task parked in `needs_review` (`cancelled`, with actor and reason in its history and the audit stream);
    /// nil when the task is not in review (the caller then sends the `reject` signal, as for a waiting task).
    public func rejectReview(task: String, reason: String, actor: String) async throws -> ActionResult? {
        let answer = try await store.control(task: task, action: "reject", reason: reason, actor: actor)
        switch answer.first ?? "" {
        case "missing": return .notFound
        case "cancelled":
            try await queries.audit(actor: actor, action: "reject", target: task, reason: reason)
            return .done("cancelled")
        default: return nil
        }
    }

    /// Delivers a signal (deduplicated by its id) and, when it woke the task, publishes the resumed step at
    /// once (else the outbox sweep of a worker does). The signal is recorded with actor and reason.
    /// - Parameter audit: false when the caller records one audit entry for many (a bulk approve).
    public func signal(_ signal: TaskSignal, audit: Bool = true) async throws -> SignalOutcome {
        let request = SignalRequest(taskID: signal.task, name: signal.name, id: signal.id)
        try request.validate()
        if signal.payloadJSON.utf8.count > SignalLimits.payloadMaxBytes {
            throw BatonError(
                .oversized, "the signal's payload is over the \(SignalLimits.payloadMaxBytes)-byte limit: store large data elsewhere",
                field: "payload")
        }
        let outcome = try await store.signal(signal)
        if outcome == .woke, let bus { await Outbox.flush(task: signal.task, store: store, bus: bus, logger: logger) }
        switch outcome {
        case .woke where audit, .stored where audit:
            let action = "signal.\(signal.name)" + (signal.edit == nil ? "" : ".edited")
            try await queries.audit(actor: signal.actor, action: action, target: signal.task, reason: signal.reason)
        default: break
        }
        return outcome
    }

    /// Redrives a dead letter: a task's starts branch n+1 from its last good checkpoint; a dead submit or
    /// message without a task is re-published where it came from.
    ///
    /// - Parameters:
    ///   - patch: an RFC 7396 JSON merge patch applied to the task's input (for a dead submit: to its `input`)
    ///     before it runs again; the `redriven` event keeps the patch and the input before it.
    ///   - audit: false when the caller records one audit entry for many (a bulk action).
    public func redrive(deadLetter id: String, reason: String, actor: String, patch: JSONValue? = nil, audit: Bool = true) async throws
        -> ActionResult
    {
        guard let letter = try await queries.deadLetter(id) else { return .notFound }
        if let task = letter.taskID, try await queries.task(task) != nil {
            var input = ""
            var details: [String: JSONValue] = ["dead_letter": .string(id)]
            if let patch {
                let before = try await redis.send("HGET", store.settings.keys.task(task), "input").string ?? "{}"
                let previous = (try? JSONValue.parse(Array(before.utf8))) ?? .null
                input = previous.applyingMergePatch(patch).jsonString
                details["input_patch"] = patch
                details["previous_input"] = previous
            }
            let result = try await act(
                "redrive", task: task, reason: reason, actor: actor, audit: audit, input: input,
                details: JSONValue.object(details).jsonString)
            switch result {
            case .done, .requested:
                BatonMetrics.redriven(agent: letter.agent ?? "")
                try await queries.removeDeadLetter(id, action: "dead.redrive", reason: reason, actor: actor, audit: audit)
            case .conflict(let status) where status != "dead_lettered":
                // The task moved on (e.g. a poison copy of an older seq): the dead letter is settled.
                try await queries.removeDeadLetter(
                    id, action: "dead.redrive", reason: reason + " (task already \(status))", actor: actor, audit: audit)
            default: break
            }
            return result
        }
        guard let bus else { throw BatonError(.internalError, "this client was connected without RabbitMQ") }
        let routing = letter.routingKeyForRedrive
        var body = letter.body
        if let patch {
            guard var submit = (try? JSONValue.parse(Array(body.utf8)))?.objectValue else {
                throw BatonError(
                    .conflict, "dead letter \(id) has no task and its body is not a JSON submit: --patch cannot apply to it")
            }
            submit["input"] = (submit["input"] ?? .null).applyingMergePatch(patch)
            body = JSONValue.object(submit).jsonString
        }
        let results = await bus.publish([OutboxMessage(exchange: routing.exchange, routingKey: routing.key, body: body)])
        if let error = results.first ?? nil { throw error }
        try await queries.removeDeadLetter(id, action: "dead.redrive", reason: reason, actor: actor, audit: audit)
        return .done("republished")
    }

    /// Discards a dead letter, recorded in the audit stream unless `audit` is false (a bulk action records one entry
    /// for all). Its task, if any, stays `dead_lettered`, and retention deletes it `limits.retention` after the discard.
    public func discard(deadLetter id: String, reason: String, actor: String, audit: Bool = true) async throws -> ActionResult {
        guard try await store.discardDeadLetter(id) else { return .notFound }
        if audit { try await queries.audit(actor: actor, action: "dead.discard", target: id, reason: reason) }
        return .done("discarded")
    }
}

extension DeadLetterView {
    /// Where a dead letter without a task goes back to: a submit to `baton.submit` (routing key = agent), a
    /// signal to `baton.signals`.
    var routingKeyForRedrive: (exchange: String, key: String) {
        let json = try? JSONValue.parse(Array(body.utf8))
        // A dead signal goes back to `baton.signals`.
        if json?["task_id"] != nil && json?["name"] != nil && json?["agent"] == nil { return (Topology.signalsExchange, "") }
        if let agent = json?["agent"]?.stringValue { return (Topology.submitExchange, agent) }
        return (Topology.submitExchange, agent ?? "")
    }
}
