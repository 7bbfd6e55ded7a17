import Foundation
import Logging
import RedisClient

/// One entry of a task's event stream, as the relay and the webhook sender read it.
struct StreamEvent: Sendable, Hashable {
    var streamID: String
    var type: String
    var seq: Int64
    var branch: Int64
    var step: String
    var atMilliseconds: Int64
    var dataJSON: String

    /// The entries of an `XRANGE` reply.
    static func entries(_ reply: RedisReply?) -> [StreamEvent] {
        (reply?.array ?? []).compactMap { entry in
            guard let parts = entry.array, parts.count == 2, let id = parts[0].string else { return nil }
            var fields: [String: String] = [:]
            let flat = parts[1].array ?? []
            var index = 0
            while index + 1 < flat.count {
                fields[flat[index].string ?? ""] = flat[index + 1].string ?? ""
                index += 2
            }
            return StreamEvent(
                streamID: id, type: fields["type"] ?? "", seq: Int64(fields["seq"] ?? "") ?? 0, branch: Int64(fields["branch"] ?? "") ?? 0,
                step: fields["step"] ?? "", atMilliseconds: Int64(fields["at"] ?? "") ?? 0, dataJSON: fields["data"] ?? "{}")
        }
    }
}

/// What the relay and the webhook sender know of a task when they publish its events (read in the same script
/// as the events).
struct EventTaskInfo: Sendable {
    var id: String
    var agent: String
    var status: String
    var notify: SubmitRequest.Notify?
    var progress: (fraction: Double, message: String)?
    var costMicros: Int64
    var tokens: Int64

    /// Parses the first eight fields of the `eventsRead` / `webhookRead` answers.
    init(id: String, parts: [RedisReply]) {
        func part(_ i: Int) -> String { i < parts.count ? (parts[i].string ?? "") : "" }
        self.init(
            id: id, agent: part(1), status: part(2), notifyJSON: part(3), progressFraction: part(4), progressMessage: part(5),
            costMicros: part(6), tokens: part(7))
    }

    /// The fields as the scripts return them (text).
    init(
        id: String, agent: String, status: String, notifyJSON: String, progressFraction: String, progressMessage: String,
        costMicros: String, tokens: String
    ) {
        self.id = id
        self.agent = agent
        self.status = status
        // Most tasks have no webhook (`{}`): only a notify that names one is decoded (on the hot path per event).
        notify =
            notifyJSON.utf8.count <= 2 || !notifyJSON.contains("webhook")
            ? nil : try? JSONCoding.decoder.decode(SubmitRequest.Notify.self, from: Data(notifyJSON.utf8))
        if !progressFraction.isEmpty, let fraction = Double(progressFraction) { progress = (fraction, progressMessage) }
        self.costMicros = Int64(costMicros) ?? 0
        self.tokens = Int64(tokens) ?? 0
    }

    var webhookURL: String? { notify?.webhook.flatMap { $0.isEmpty ? nil : $0 } }
}

/// The public event JSON (DESIGN.md §6) of one stream entry, its routing key and its stable id.
enum EventMessage {
    /// The task status an event type implies; types that do not imply one (`signal_received`, `waking_soon`,
    /// `resumed` of a task that was not paused) take the task's status when the event is published.
    static let statusOfType: [String: String] = [
        "submitted": "queued", "started": "running", "step_committed": "queued", "progress": "running", "waiting": "waiting",
        "sleeping": "sleeping", "woke": "queued", "retrying": "retrying", "handoff": "queued", "paused": "paused",
        "needs_review": "needs_review", "budget_exceeded": "budget_exceeded", "dead_lettered": "dead_lettered", "redriven": "queued",
        "forked": "queued", "succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled",
    ]

    /// What `notify.events` may name: an event type (`budget_raised` is main's, from the review branch), `status`
    /// (every type but `progress`) or `*`.
    static let filterNames: Set<String> = Set(statusOfType.keys).union([
        "signal_received", "waking_soon", "resumed", "budget_raised", "status", "*",
    ])

    /// `evt_<task>_<seq>_<stream id>`: unique per event, the same on every re-publish and webhook retry, so
    /// consumers dedupe by it.
    static func id(task: String, _ event: StreamEvent) -> String {
        var id = "evt_"
        id.reserveCapacity(task.utf8.count + event.streamID.utf8.count + 26)
        id += task
        id += "_"
        id += String(event.seq)
        id += "_"
        id += event.streamID
        return id
    }

    static func routingKey(task: EventTaskInfo, _ event: StreamEvent) -> String {
        // One allocation (`a + "." + b + …` made a string per `+`; this runs once per event).
        var key = ""
        key.reserveCapacity(task.agent.utf8.count + task.id.utf8.count + event.type.utf8.count + 2)
        key += task.agent
        key += "."
        key += task.id
        key += "."
        key += event.type
        return key
    }

    /// The event's JSON, written by hand (keys sorted, as `JSONCoding` writes them): the relay writes one per
    /// event, and the generic encoder cost more than the publish. `data` is the stream entry's JSON as the
    /// scripts wrote it, embedded as is when it is a non-empty object.
    static func body(task: EventTaskInfo, _ event: StreamEvent) -> String { body(task: task, event, id: id(task: task.id, event)) }

    /// The event's JSON, its ``id(task:_:)`` given (it is a header of the message as well).
    static func body(task: EventTaskInfo, _ event: StreamEvent, id: String) -> String {
        var progress = task.progress
        if event.type == "progress", let data = try? JSONValue.parse(Array(event.dataJSON.utf8)),
            let fraction = data["fraction"]?.doubleValue
        {
            progress = (fraction, data["message"]?.stringValue ?? "")
        }
        let data = JSONText.trimmed(event.dataJSON)
        // Written as bytes into one buffer sized up front: a `String` grown by `+=` and interpolation reallocated
        // and copied several times per event (~3.5 % of a worker's CPU on the step chain, perf, fifteenth session).
        var out = JSONObjectWriter(
            capacity: 300 + 2 * task.id.utf8.count + task.agent.utf8.count + data.utf8.count + event.step.utf8.count
                + (progress?.message.utf8.count ?? 0))
        out.string("agent", task.agent)
        out.iso("at", milliseconds: event.atMilliseconds)
        out.integer("branch", event.branch)
        out.object("budget") { budget in
            budget.json("cost_usd", (Double(task.costMicros) / 1_000_000).description)
            budget.integer("tokens", task.tokens)
        }
        if data.hasPrefix("{") && data.hasSuffix("}") && data.utf8.count > 2 { out.json("data", data) }
        out.string("id", id)
        if let progress {
            out.object("progress") { object in
                object.json("fraction", (progress.fraction.isFinite ? progress.fraction : 0).description)
                object.string("message", progress.message)
            }
        }
        out.integer("seq", event.seq)
        out.string("status", statusOfType[event.type] ?? task.status)
        if !event.step.isEmpty { out.string("step", event.step) }
        out.string("stream_id", event.streamID)
        out.string("task_id", task.id)
        out.string("type", event.type)
        out.integer("v", 1)
        return out.finish()
    }

    static func outbox(task: EventTaskInfo, _ event: StreamEvent) -> OutboxMessage {
        let id = id(task: task.id, event)
        return OutboxMessage(
            exchange: Topology.eventsExchange, routingKey: routingKey(task: task, event), body: body(task: task, event, id: id),
            headers: ["x-baton-task": task.id, "x-baton-event-id": id])
    }
}

/// Publishes every task's events to the `baton.events` topic exchange, in stream order per task, with
/// confirms. Leaderless: the task's stream is its event outbox, the scripts mark a task in its bucket's
/// `events_pending` zset when they append an event, and any worker claims marked tasks (re-scored a lease
/// ahead, so a crashed relay's tasks come back), publishes from the task's cursor, then advances the cursor
/// with a compare-and-set. At least once: a crash between the confirm and the cursor re-publishes that tail;
/// consumers dedupe by the event's `id`.
final class EventRelay: Sendable {
    let store: RedisTaskStore
    let bus: any MessageBus
    let logger: Logger
    /// Tasks claimed per bucket per round, and events read per task per round: a round's reads share the worker's
    /// Redis connection with the steps, so a backlog is taken in bounded bites.
    let tasksPerBucket = 32
    let eventsPerTask = 200
    let leaseMilliseconds: Int64 = 30_000

    static let readScript = RedisScript(Scripts.eventsRead)
    static let advanceScript = RedisScript(Scripts.eventsAdvance)

    init(store: RedisTaskStore, bus: any MessageBus, logger: Logger) {
        self.store = store
        self.bus = bus
        self.logger = logger
    }

    var keys: RedisKeys { store.settings.keys }

    /// One round over every bucket; returns the number of events published (0: nothing was due).
    @discardableResult
    func relay() async throws -> Int { try await round().published }

    /// One round over every bucket: the events published, and whether the round was full (a bucket gave
    /// `tasksPerBucket` tasks or a task `eventsPerTask` events), i.e. a backlog is left for the next round at once.
    func round() async throws -> (published: Int, full: Bool) {
        let claimed = try await store.redis.evalSHA(
            RedisTaskStore.claimTimersScript, keys: (0..<keys.bucketCount).map { keys.eventsPending(bucket: $0) },
            args: [tasksPerBucket, leaseMilliseconds])
        let flat = (claimed.array ?? []).compactMap(\.string)
        var ids: [String] = []
        var index = 1
        while index < flat.count {
            ids.append(flat[index])
            index += 2
        }
        guard !ids.isEmpty else { return (0, false) }
        var perBucket: [Int: Int] = [:]
        for id in ids { perBucket[keys.bucket(of: id), default: 0] += 1 }
        var full = perBucket.values.contains { $0 >= tasksPerBucket }
        let replies = try await store.redis.pipeline(
            ids.map { id in
                let task = keys.of(id)
                return .evalSHA(Self.readScript, keys: [task.task, task.events, task.budget], args: [eventsPerTask])
            })
        var batches: [(info: EventTaskInfo, cursor: String, events: [StreamEvent], trimmed: Int64)] = []
        for (id, reply) in zip(ids, replies) {
            let parts = reply.array ?? []
            guard parts.count >= 10 else {
                logger.warning("event relay: unexpected answer", metadata: ["task.id": "\(id)", "reply": "\(reply)"])
                continue
            }
            let trimmed = Int64(parts[9].int ?? 0)
            if trimmed > 0 {
                logger.warning(
                    "event relay: events were trimmed from the task's stream (limits.events_max_length) before they were published",
                    metadata: ["task.id": "\(id)", "events.dropped": "\(trimmed)"])
            }
            let events = StreamEvent.entries(parts[8])
            if events.count >= eventsPerTask { full = true }
            batches.append((EventTaskInfo(id: id, parts: parts), parts[0].string ?? "", events, trimmed))
        }
        let messages = batches.flatMap { batch in batch.events.map { EventMessage.outbox(task: batch.info, $0) } }
        let results = messages.isEmpty ? [] : await bus.publish(messages)
        var offset = 0
        var advances: [RedisCommand] = []
        var published = 0
        var unconfirmed: (tasks: Int, error: (any Error)?) = (0, nil)
        for batch in batches {
            let outcome = results[offset..<(offset + batch.events.count)]
            offset += batch.events.count
            // Only the confirmed prefix counts: a later event is never ahead of an unconfirmed earlier one.
            let confirmed = outcome.prefix { $0 == nil }.count
            if confirmed < batch.events.count {
                unconfirmed.tasks += 1
                unconfirmed.error = unconfirmed.error ?? (outcome.dropFirst(confirmed).first ?? nil)
            }
            published += confirmed
            let cursor = confirmed > 0 ? batch.events[confirmed - 1].streamID : batch.cursor
            let task = keys.of(batch.info.id)
            let bucket = keys.bucket(of: batch.info.id)
            advances.append(
                .evalSHA(
                    Self.advanceScript,
                    keys: [task.task, task.events, keys.eventsPending(bucket: bucket), keys.webhooksDue(bucket: bucket)],
                    args: [
                        batch.info.id, batch.cursor, cursor, Int64(confirmed) + batch.trimmed, batch.info.webhookURL == nil ? "0" : "1",
                    ]))
        }
        if !advances.isEmpty { _ = try await store.redis.pipeline(advances) }
        if unconfirmed.tasks > 0 {
            // One line per round; a broker that confirms nothing (down, blocked) is retried once a second.
            logger.warning(
                "event relay: publishes not confirmed; their events are published again next round",
                metadata: ["tasks": "\(unconfirmed.tasks)", "error": "\(String(describing: unconfirmed.error))"])
            if published == 0 { try await Task.sleep(for: .seconds(1)) }
        }
        return (published, full)
    }
}
