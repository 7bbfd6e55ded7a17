import Baton
import Foundation
import Logging
import Synchronization

/// Runs agents on the in-memory backend for unit tests: the same ``StepExecutor`` a worker runs, on an
/// ``InMemoryTaskStore`` that applies the production rules and an ``InMemoryBus`` standing in for the
/// step queues, with a ``TestClock`` that jumps over retry backoffs and lease expiries.
///
/// It is a real backend, not a mock of RabbitMQ or Redis: every submit, claim, charge, side effect and
/// commit goes through the step protocol, so what a test proves about an agent (its retries, budgets,
/// re-runs after a crash) holds on a worker. Steps run one at a time in delivery order; the leaderless
/// sweeps of a worker (due timers, stalled tasks, outbox) run whenever the queue is empty.
///
/// ```swift
/// let harness = BatonTestHarness(agents: [StepChainAgent()])
/// let id = try await harness.submit(agent: "stepchain", input: ["steps": 3])
/// await harness.runUntilIdle()
/// #expect(harness.task(id)?.status == "succeeded")
/// ```
///
/// Not modelled: network partitions and lost replies between worker and Redis or RabbitMQ, broker
/// delivery limits (the quorum queue's poison-message dead-lettering), queue length limits, consumer
/// timeouts, AOF loss on an OS crash, and concurrency between workers beyond what a test drives itself.
/// A step's time slice (``StepContext/shouldYield``) and lease renewal use real time, as on a worker.
public final class BatonTestHarness: Sendable {
    /// A step message waiting in a step queue.
    public struct Delivery: Sendable, Hashable {
        public var body: [UInt8]
        /// The step queue (the routing key on `baton.steps`).
        public var routingKey: String
        /// True when RabbitMQ hands it out again after the consumer that had it went away.
        public var redelivered: Bool
        /// The decoded step message, or nil for a malformed body.
        public var message: StepMessage? { try? StepMessage.decode(body) }
    }

    /// A message that reached `baton.dead`, with its headers decoded.
    public struct CollectedDeadLetter: Sendable, Hashable {
        /// `retries_exhausted, permanent_error, malformed, unknown_agent, stale_seq, oversized`, …
        public var reason: String
        public var error: String
        public var task: String?
        public var step: String?
        public var seq: Int64?
        public var branch: Int64?
        public var attempts: Int64?
        public var bucket: String?
        public var worker: String?
        public var body: String
        public var routingKey: String
        public var headers: [String: String]

        init(_ message: OutboxMessage) {
            let h = message.headers
            reason = h["x-baton-reason"] ?? ""
            error = h["x-baton-error"] ?? ""
            task = h["x-baton-task"]
            step = h["x-baton-step"]
            seq = h["x-baton-seq"].flatMap { Int64($0) }
            branch = h["x-baton-branch"].flatMap { Int64($0) }
            attempts = h["x-baton-attempts"].flatMap { Int64($0) }
            bucket = h["x-baton-bucket"]
            worker = h["x-baton-worker"]
            body = message.body
            routingKey = message.routingKey
            headers = h
        }
    }

    /// What ``runUntilIdle(maxDeliveries:)`` did.
    public struct RunSummary: Sendable, Hashable {
        /// Step deliveries handled.
        public var deliveries: Int
        /// How far the test clock moved to reach due timers and expired leases.
        public var advancedMilliseconds: Int64
        /// False when it stopped at `maxDeliveries` with work left.
        public var idle: Bool
    }

    struct State {
        var queue: [Delivery] = []
        var deadLetters: [CollectedDeadLetter] = []
        var otherMessages: [OutboxMessage] = []
        var executor: StepExecutor
        var workerNumber = 1
        var dispositions: [String] = []
    }

    public let clock: TestClock
    public let store: InMemoryTaskStore
    public let bus: InMemoryBus
    public let registry: AgentRegistry
    public let settings: ProtocolSettings
    let logger: Logger
    private let state: Mutex<State>

    /// A harness serving `registry`. `logger` defaults to one that discards everything.
    public init(
        registry: AgentRegistry, settings: ProtocolSettings = ProtocolSettings(), clock: TestClock = TestClock(),
        storeSettings: InMemoryTaskStore.Settings = InMemoryTaskStore.Settings(), logger: Logger? = nil
    ) {
        self.clock = clock
        self.registry = registry
        self.settings = settings
        self.store = InMemoryTaskStore(clock: clock, settings: storeSettings)
        self.bus = InMemoryBus()
        let logger = logger ?? Logger(label: "baton.testing", factory: { _ in SwiftLogNoOpLogHandler() })
        self.logger = logger
        let executor = StepExecutor(registry: registry, store: store, bus: bus, workerID: "worker-1", settings: settings, logger: logger)
        self.state = Mutex(State(executor: executor))
    }

    /// A harness serving `agents`.
    public convenience init(
        agents: [any Agent], settings: ProtocolSettings = ProtocolSettings(), clock: TestClock = TestClock(), logger: Logger? = nil
    ) {
        var registry = AgentRegistry()
        for agent in agents { registry.register(agent) }
        self.init(registry: registry, settings: settings, clock: clock, logger: logger)
    }

    /// The executor of the current (live) worker.
    public var executor: StepExecutor { state.withLock { $0.executor } }

    /// The id of the current worker (`worker-1`, then `worker-2` after a simulated crash, …).
    public var workerID: String { executor.workerID }

    // MARK: - Submitting and controlling

    /// Submits a task through ``StepExecutor/submit(_:)`` (idempotent by `id`) and queues its first step.
    /// Returns the task id.
    @discardableResult
    public func submit(
        agent: String, input: JSONValue = .object([:]), budget: BudgetRequest? = nil, id: String? = nil, tenant: String? = nil,
        labels: [String: String]? = nil
    ) async throws -> String {
        let request = SubmitRequest(id: id, agent: agent, input: input, budget: budget, tenant: tenant, labels: labels)
        let (taskID, _) = try await executor.submit(request)
        pump()
        return taskID
    }

    /// Submits a task of agent type `A` with a typed input.
    @discardableResult
    public func submit<A: Agent>(
        _ agent: A.Type, input: A.Input, budget: BudgetRequest? = nil, id: String? = nil, tenant: String? = nil
    ) async throws -> String {
        let value = try JSONValue.parse(try JSONCoding.encode(input))
        return try await submit(agent: A.name, input: value, budget: budget, id: id, tenant: tenant)
    }

    /// Requests a cancel: a task that is not running is cancelled at once; a running one at its commit.
    @discardableResult
    public func cancel(_ id: String, reason: String = "test", actor: String = "test") async -> ControlResult {
        await control(id, action: "cancel", reason: reason, actor: actor)
    }

    /// Pauses a task: at once when not running, at the running step's commit otherwise.
    @discardableResult
    public func pause(_ id: String, reason: String = "test", actor: String = "test") async -> ControlResult {
        await control(id, action: "pause", reason: reason, actor: actor)
    }

    /// Resumes a paused task (queues its step again) or withdraws a pending pause request.
    @discardableResult
    public func resume(_ id: String, reason: String = "test", actor: String = "test") async -> ControlResult {
        await control(id, action: "resume", reason: reason, actor: actor)
    }

    /// Redrives a dead-lettered task on a new branch from its last checkpoint.
    @discardableResult
    public func redrive(_ id: String, reason: String = "test", actor: String = "test") async -> ControlResult {
        await control(id, action: "redrive", reason: reason, actor: actor)
    }

    /// Forks a task: a new branch from its kept checkpoint `fromSeq` (the step to run: `step`, or the one the
    /// history names), published at once.
    @discardableResult
    public func fork(_ id: String, fromSeq: Int64, step: String? = nil, reason: String = "test", actor: String = "test") async
        -> ControlResult
    {
        let result = store.fork(task: id, fromSeq: fromSeq, step: step, reason: reason, actor: actor)
        await executor.flushOutbox(task: id)
        pump()
        return result
    }

    /// Sends signal `name` to a task (deduplicated by `signalID`): a task waiting for it wakes at once
    /// (its resumed step is queued); otherwise the signal is kept in the task's mailbox until a wait takes it.
    @discardableResult
    public func signal(
        _ id: String, _ name: String, payload: JSONValue? = nil, signalID: String? = nil, actor: String = "test", reason: String = ""
    ) async throws -> SignalOutcome {
        let outcome = try await store.signal(
            TaskSignal(task: id, name: name, payloadJSON: payload?.jsonString ?? "", id: signalID, actor: actor, reason: reason))
        await executor.flushOutbox(task: id)
        pump()
        return outcome
    }

    /// Approves a waiting task (the signal `approve`), as `baton approve` does: with `edit` (an RFC 7396 merge patch)
    /// the payload the woken step receives is `payload` — or, without one, the task's input — with the patch applied,
    /// and the `signal_received` event records the patch and `edited_by`.
    @discardableResult
    public func approve(
        _ id: String, payload: JSONValue? = nil, edit: JSONValue? = nil, signalID: String? = nil, actor: String = "test",
        reason: String = ""
    ) async throws -> SignalOutcome {
        var base = payload
        if edit != nil, base == nil { base = store.inputJSON(of: id).flatMap { try? JSONValue.parse(Array($0.utf8)) } }
        let outcome = try await store.signal(
            TaskSignal.approval(task: id, base: base, edit: edit, id: signalID, actor: actor, reason: reason))
        await executor.flushOutbox(task: id)
        pump()
        return outcome
    }

    /// Raises a task's limits (`max_cost_usd=+2,max_steps=+50`); a task in `needs_review` resumes at once.
    @discardableResult
    public func raiseBudget(_ id: String, _ raise: String, reason: String = "test", actor: String = "test") async throws -> ControlResult {
        let result = store.raiseBudget(task: id, try BudgetRaise(parsing: raise), reason: reason, actor: actor)
        await executor.flushOutbox(task: id)
        pump()
        return result
    }

    /// Ends a task parked in `needs_review` (`cancelled`, the `cancelled` event names the actor and `reject`).
    @discardableResult
    public func reject(_ id: String, reason: String = "test", actor: String = "test") async -> ControlResult {
        await control(id, action: "reject", reason: reason, actor: actor)
    }

    private func control(_ id: String, action: String, reason: String, actor: String) async -> ControlResult {
        let result = store.control(task: id, action: action, reason: reason, actor: actor)
        await executor.flushOutbox(task: id)
        pump()
        return result
    }

    // MARK: - Running

    /// Delivers queued step messages, fires due timers, republishes stalled tasks and moves the test clock
    /// to the next due instant whenever nothing else is left, until no work remains or `maxDeliveries`
    /// deliveries were handled.
    @discardableResult
    public func runUntilIdle(maxDeliveries: Int = 10_000) async -> RunSummary {
        let start = clock.nowMilliseconds
        var deliveries = 0
        while deliveries < maxDeliveries {
            if await deliverNext() != nil {
                deliveries += 1
                continue
            }
            if await sweep() { continue }
            guard let wake = store.nextWakeMilliseconds() else {
                return RunSummary(deliveries: deliveries, advancedMilliseconds: clock.nowMilliseconds - start, idle: true)
            }
            clock.advance(toMilliseconds: wake)
            if !(await sweep()) && store.nextWakeMilliseconds() == wake {
                // Nothing became due at the instant we moved to: move past it.
                clock.advance(toMilliseconds: wake + 1)
            }
        }
        let idle = pendingDeliveries.isEmpty && store.nextWakeMilliseconds() == nil
        return RunSummary(deliveries: deliveries, advancedMilliseconds: clock.nowMilliseconds - start, idle: idle)
    }

    /// Hands the first queued step message to the worker; returns its disposition, or nil when the queue is
    /// empty.
    @discardableResult
    public func deliverNext() async -> Disposition? {
        let delivery: Delivery? = state.withLock { state in
            state.queue.isEmpty ? nil : state.queue.removeFirst()
        }
        guard let delivery else { return nil }
        return await handle(delivery)
    }

    /// Hands `message` straight to the worker, as if the broker delivered it (a duplicate, a stale or a
    /// future message); returns its disposition.
    @discardableResult
    public func deliver(_ message: StepMessage, queue: String = "default") async -> Disposition {
        let body = (try? JSONCoding.encode(message)) ?? []
        return await handle(Delivery(body: body, routingKey: queue, redelivered: false))
    }

    /// Hands a raw body to the worker (for malformed messages).
    @discardableResult
    public func deliver(body: [UInt8], queue: String = "default") async -> Disposition {
        await handle(Delivery(body: body, routingKey: queue, redelivered: false))
    }

    /// Appends `message` to its step queue, as a duplicate publish would.
    public func enqueue(_ message: StepMessage, queue: String = "default") {
        let body = (try? JSONCoding.encode(message)) ?? []
        state.withLock { $0.queue.append(Delivery(body: body, routingKey: queue, redelivered: false)) }
    }

    private func handle(_ delivery: Delivery) async -> Disposition {
        let executor = self.executor
        store.heartbeat(worker: executor.workerID)
        let crashesBefore = store.crashCount
        let disposition = await executor.handleStep(body: delivery.body, routingKey: delivery.routingKey)
        if store.crashCount > crashesBefore {
            // The worker died holding the delivery: RabbitMQ puts it back, and another worker takes over.
            state.withLock { state in
                var again = delivery
                again.redelivered = true
                state.queue.insert(again, at: 0)
                state.workerNumber += 1
                state.executor = StepExecutor(
                    registry: registry, store: store, bus: bus, workerID: "worker-\(state.workerNumber)", settings: settings,
                    logger: logger)
                state.dispositions.append("crash")
            }
            pump()
            return disposition
        }
        switch disposition {
        case .settled, .ack:
            state.withLock { $0.dispositions.append("ack") }
        case .requeue(let why):
            state.withLock { state in
                state.queue.append(delivery)
                state.dispositions.append("requeue: \(why)")
            }
        case .deadLetter(let letter):
            _ = await bus.publish([letter.message])
            state.withLock { $0.dispositions.append("dead_letter: \(letter.reason)") }
        }
        pump()
        return disposition
    }

    /// Runs the worker's sweeps once at the current test time: due timers, stalled tasks (lease expired
    /// without a commit), outbox entries left unpublished. Returns whether anything was published.
    @discardableResult
    public func sweep() async -> Bool {
        let before = pendingDeliveries.count + deadLetters.count
        let timers = store.takeDueTimers()
        if !timers.isEmpty { _ = await bus.publish(timers) }
        for id in store.stalledTasks() {
            let result = store.control(task: id, action: "stalled", reason: "lease expired", actor: "sweep:\(workerID)")
            if result.outcome == "republished" { await executor.flushOutbox(task: id) }
        }
        for id in store.tasksWithPendingOutbox() { await executor.flushOutbox(task: id) }
        pump()
        return pendingDeliveries.count + deadLetters.count > before
    }

    /// Moves what the bus holds into the step queues, the dead letters and the other messages.
    private func pump() {
        let messages = bus.takeAll()
        guard !messages.isEmpty else { return }
        state.withLock { state in
            for message in messages {
                switch message.exchange {
                case Topology.stepsExchange:
                    state.queue.append(Delivery(body: Array(message.body.utf8), routingKey: message.routingKey, redelivered: false))
                case Topology.deadExchange:
                    state.deadLetters.append(CollectedDeadLetter(message))
                default:
                    state.otherMessages.append(message)
                }
            }
        }
    }

    // MARK: - Fault injection

    /// Makes the worker that claims the next step (of `task`, or of any task) die mid-step, without a
    /// commit: with `afterSideEffects`, after the step's code ran and recorded its side effects and
    /// charges; without, right after the claim, before the step's code records anything. RabbitMQ then
    /// redelivers the message, which the next worker acks as a duplicate while the dead worker's lease
    /// lasts; once the lease expires (``runUntilIdle(maxDeliveries:)`` moves the clock there), the stalled
    /// sweep republishes the step from the checkpoint and it runs again. Use it to prove a step is safe to
    /// re-run.
    public func crashNextStep(afterSideEffects: Bool = true, task: String? = nil) {
        store.crashNextClaim(of: task, at: afterSideEffects ? .beforeCommit : .afterClaim)
    }

    // MARK: - Inspection

    /// The task as stored now, or nil when no task has this id.
    public func task(_ id: String) -> TaskSnapshot? { store.snapshot(of: id) }

    /// The current checkpoint of a task decoded as `type` (its agent's `State`).
    public func state<S: Decodable>(of id: String, as type: S.Type) throws -> S {
        guard let snapshot = store.snapshot(of: id) else {
            throw BatonError(.notFound, "no task has the id '\(id)'")
        }
        return try snapshot.state(as: type)
    }

    /// Step messages waiting in the step queues, in delivery order.
    public var pendingDeliveries: [Delivery] { state.withLock { $0.queue } }

    /// Everything that reached `baton.dead`, in order.
    public var deadLetters: [CollectedDeadLetter] { state.withLock { $0.deadLetters } }

    /// Published messages that are neither step messages nor dead letters (events, replies).
    public var otherMessages: [OutboxMessage] { state.withLock { $0.otherMessages } }

    /// How each delivery ended, in order: `ack`, `requeue: …`, `dead_letter: <reason>`, `crash`.
    public var dispositions: [String] { state.withLock { $0.dispositions } }
}
