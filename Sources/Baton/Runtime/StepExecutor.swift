import Foundation
import Logging

/// Settings of the step protocol that every worker shares.
public struct ProtocolSettings: Sendable {
    /// How long a claimed step's lease lasts; renewed every third of it while the step runs.
    public var lease: Duration = .seconds(15)
    /// The time slice of one step: after it, ``StepContext/shouldYield`` is true.
    public var timeSlice: Duration = .seconds(60)
    /// The largest checkpoint (encoded state) a step may commit.
    public var checkpointMaxBytes = 1 << 20
    /// The largest submit body accepted.
    public var submitMaxBytes = 1 << 20
    /// Children a task may start over its life (`parallel`); one more fails the task naming this cap.
    public var maxChildren = ChildLimits.maxChildren
    /// Tasks whose last committed state a worker keeps decoded (``StateCache``); 0 turns the cache off.
    public var stateCacheEntries = 1024
    /// Run a task's next step on the worker that committed the previous one without claiming it first, from the
    /// cached state (``StepLease``); the commit checks what the claim would have. Needs ``stateCacheEntries`` > 0.
    public var speculativeSteps = true
    /// Limits applied when neither the submit nor the agent states them.
    public var defaultLimits = BudgetLimits(maxSteps: 10_000, maxToolCalls: 10_000, maxHandoffs: 1_000, maxAttempts: 5)

    public init() {}

    var leaseMilliseconds: Int64 { Int64(lease.wholeMilliseconds) }
}

/// What to do with a delivery once it was handled.
public enum Disposition: Sendable {
    /// Acknowledge it: its effect is committed (or it was a duplicate).
    case ack
    /// Put it back: a server needed to handle it was unreachable; nothing was committed.
    case requeue(String)
    /// Dead-letter it with a reason (it is acked after the dead letter is confirmed).
    case deadLetter(DeadLetter)
    /// Handed to the ``DeliverySettlement``: the next message is being published, and the delivery is
    /// acked when the broker confirms it (or requeued if it does not). The caller does nothing more.
    case settled
}

/// How a worker settles a delivery whose commit produced a message to publish: publish it, and ack the
/// delivery once the broker confirmed it — without a task waiting for the confirm.
public protocol DeliverySettlement: Sendable {
    /// Publishes each hop's message; when the broker confirmed it, runs its `beforeAck`, acks its delivery
    /// and calls `confirmed(true)`; when it did not, requeues the delivery and calls `confirmed(false)`.
    /// `hops` may hold other settlements of the same kind (a batch): they are handed off together.
    /// `events` (messages with no delivery to ack: the batch's inline events) go out in the same hand-off, and
    /// `eventsSettled` gets whether the broker confirmed each of them, in order.
    func settle(_ hops: [SettlementHop], events: [OutboxMessage], eventsSettled: (@Sendable ([Bool]) -> Void)?)
}

extension DeliverySettlement {
    func settle(_ hops: [SettlementHop]) { settle(hops, events: [], eventsSettled: nil) }
}

/// One delivery to settle after publishing its step's next message.
public struct SettlementHop: Sendable {
    public var settlement: any DeliverySettlement
    public var message: OutboxMessage
    public var beforeAck: @Sendable () -> Void
    public var confirmed: @Sendable (Bool) -> Void

    public init(
        settlement: any DeliverySettlement, message: OutboxMessage, beforeAck: @escaping @Sendable () -> Void,
        confirmed: @escaping @Sendable (Bool) -> Void
    ) {
        self.settlement = settlement
        self.message = message
        self.beforeAck = beforeAck
        self.confirmed = confirmed
    }
}

/// A message sent to `baton.dead` with its reason.
public struct DeadLetter: Sendable {
    /// `retries_exhausted, permanent_error, delivery_limit, malformed, unknown_agent, stale_seq, oversized`.
    public var reason: String
    public var error: String
    public var field: String?
    public var task: String?
    public var agent: String?
    public var step: String?
    public var seq: Int64?
    public var branch: Int64?
    public var attempts: Int64?
    public var bucket: String?
    public var worker: String
    public var body: String
    public var routingKey: String

    /// The message to publish to `baton.dlx`.
    public var message: OutboxMessage {
        var headers: [String: String] = [
            "x-baton-reason": reason, "x-baton-error": error, "x-baton-worker": worker,
            "x-baton-dead-at": ISO8601DateFormatter.fractional.string(from: Date()),
        ]
        if let field { headers["x-baton-field"] = field }
        if let task { headers["x-baton-task"] = task }
        if let agent { headers["x-baton-agent"] = agent }
        if let step { headers["x-baton-step"] = step }
        if let seq { headers["x-baton-seq"] = String(seq) }
        if let branch { headers["x-baton-branch"] = String(branch) }
        if let attempts { headers["x-baton-attempts"] = String(attempts) }
        if let bucket { headers["x-baton-bucket"] = bucket }
        return OutboxMessage(exchange: Topology.deadExchange, routingKey: routingKey, body: body, headers: headers)
    }
}

extension ISO8601DateFormatter {
    /// `2026-11-22T10:00:00.000Z`.
    nonisolated(unsafe) static let fractional: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()
}

/// Runs the step protocol of DESIGN.md §5 for one delivery: claim under a lease, run, commit once, publish
/// the outbox. The same code runs on Redis + RabbitMQ and on the in-memory backend of `BatonTesting`.
///
/// A class, not a struct: every step's tasks and closures capture the executor, and a struct of a dozen references
/// was copied (each reference retained and released) into each of them.
public final class StepExecutor: Sendable {
    public let registry: AgentRegistry
    public let store: any TaskStore
    public let bus: any MessageBus
    public let workerID: String
    public let settings: ProtocolSettings
    public let logger: Logger
    let drain: StepSignals
    let leases: LeaseKeeper
    let states: StateCache
    let settledPublishes: SettledPublishes
    let speculation = SpeculationCounters()
    /// The event data of a commit that names no other (`{"worker":"<id>"}`), written once.
    let workerEventData: String

    public init(
        registry: AgentRegistry, store: any TaskStore, bus: any MessageBus, workerID: String, settings: ProtocolSettings, logger: Logger
    ) {
        self.registry = registry
        self.store = store
        self.bus = bus
        self.workerID = workerID
        self.settings = settings
        self.logger = logger
        let drain = StepSignals()
        self.drain = drain
        self.leases = LeaseKeeper(store: store, workerID: workerID, settings: settings, drain: drain)
        self.states = StateCache(capacity: settings.stateCacheEntries)
        self.settledPublishes = SettledPublishes(store: store)
        self.workerEventData = "{\"worker\":" + JSONText.quoted(workerID) + "}"
    }

    /// Tells running steps that the worker is shutting down (``StepContext/shouldYield`` becomes true).
    public func beginDrain() { drain.markDraining() }

    // MARK: - Submits

    /// Creates the task of a submit (idempotent by id) and publishes its first step. Returns the task id and
    /// status, or throws a ``BatonError`` naming the field to fix.
    public func submit(body: [UInt8]) async throws -> (id: String, status: String) {
        let taken = try await take(body: body)
        return (taken.id, taken.status)
    }

    public func submit(_ request: SubmitRequest) async throws -> (id: String, status: String) {
        let taken = try await take(request)
        return (taken.id, taken.status)
    }

    /// What a submit did: the task, its status, and what its submitter should know.
    public struct SubmitTaken: Sendable {
        public var id: String
        public var status: String
        /// Set when the new task's first step found no queue in RabbitMQ (``Outbox/noQueueWarning(_:)``).
        public var warning: String?
    }

    /// ``submit(body:)``, with the warning for the submitter (the worker's reply carries it).
    public func take(body: [UInt8]) async throws -> SubmitTaken {
        try await take(try SubmitRequest.decode(body, maxBytes: settings.submitMaxBytes))
    }

    /// ``submit(_:)``, with the warning for the submitter.
    public func take(_ request: SubmitRequest) async throws -> SubmitTaken {
        try request.validate()
        guard let runner = registry[request.agent] else {
            throw BatonError(
                .unknownAgent, "no worker here serves agent '\(request.agent)' (known: \(registry.names.joined(separator: ", ")))",
                field: "agent")
        }
        let inputBytes = try JSONCoding.encode(request.input)
        let (stateJSON, sticky) = try runner.start(inputBytes)
        var defaults = BudgetLimits(runner.options.defaultBudget, defaults: settings.defaultLimits)
        if runner.options.defaultBudget?.onLimit == nil { defaults.reviewOnLimit = runner.onLimit == .review }
        let id = request.id ?? TaskID.generate()
        let labels = try JSONCoding.string(request.labels ?? [:])
        let notify = try request.notify.map { try JSONCoding.string($0) } ?? "{}"
        var task = NewTask(
            id: id, agent: request.agent, inputJSON: String(decoding: inputBytes, as: UTF8.self), stateJSON: stateJSON,
            firstStep: runner.steps.first ?? "start", queue: runner.options.queue, limits: BudgetLimits(request.budget, defaults: defaults),
            tenant: request.tenant ?? "", labelsJSON: labels, notifyJSON: notify)
        let outboxID = RedisTaskStore.outboxID()
        task.outboxID = outboxID
        switch try await store.submit(task) {
        case .created:
            BatonMetrics.tasksSubmitted(request.agent).increment()
            if task.tenant.isEmpty, settings.speculativeSteps, store.supportsSpeculativeSteps {
                // The first step may run here without a claim, as a step after this worker's commit does (StepLease):
                // fence 0, the limits just written, nothing spent. A task with a tenant is claimed (the tenant's daily
                // counters are the claim's to check). Only into a cache with room: a burst of submits must not push out
                // the states of the steps running here.
                states.put(
                    task: id, seq: 0, branch: 0, agent: request.agent, value: sticky,
                    basis: SpeculationBasis(token: 0, limits: task.limits, usage: BudgetUsage()), evicting: false)
            }
            let warning = await publishFirstStep(task, outboxID: outboxID)
            return SubmitTaken(id: id, status: "queued", warning: warning)
        case .exists(let status):
            let left = await flushOutbox(task: id)
            let queue = left.first(where: \.unroutable)?.message.routingKey
            return SubmitTaken(id: id, status: status, warning: queue.map(Outbox.noQueueWarning))
        }
    }

    /// Publishes a new task's first step message, which its submit also wrote to the task's outbox (entry `outboxID`),
    /// and removes that entry once the broker confirmed it, without waiting. What is not confirmed stays for the outbox
    /// sweep, as ``flushOutbox(task:)`` leaves it.
    /// Returns the submitter's warning when RabbitMQ has no queue for the step.
    @discardableResult
    func publishFirstStep(_ task: NewTask, outboxID: String) async -> String? {
        let results = await bus.publish([.step(task.firstMessage, queue: task.queue)])
        guard results.count == 1, results[0] == nil else {
            logger.warning(
                "first step not published; the outbox sweep retries it",
                metadata: ["task.id": "\(task.id)", "error": "\(String(describing: results.first ?? nil))"])
            return Outbox.isUnroutable(results.first ?? nil) ? Outbox.noQueueWarning(task.queue) : nil
        }
        store.outboxDoneWithoutWaiting(task: task.id, ids: [outboxID])
        return nil
    }

    /// Publishes whatever a task's outbox still holds, then removes it. Failures stay for the outbox sweep (returned).
    @discardableResult
    public func flushOutbox(task: String) async -> [Outbox.Leftover] {
        await Outbox.flush(task: task, store: store, bus: bus, logger: logger)
    }

    // MARK: - Steps

    /// Handles one step delivery. The caller acks, requeues or dead-letters it as told.
    public func handleStep(body: [UInt8], routingKey: String) async -> Disposition {
        await handleStep(body: body, routingKey: routingKey, redelivered: false)
    }

    /// Handles one step delivery; `redelivered` is the broker's flag (the delivery went to a consumer
    /// before, which usually means that consumer died). Then a lease still held by someone else is waited
    /// out (up to one lease) instead of being acked as a duplicate, so a crashed worker's task resumes as
    /// soon as its lease expires rather than at the next stalled-task sweep.
    public func handleStep(
        body: [UInt8], routingKey: String, redelivered: Bool, settlement: (any DeliverySettlement)? = nil
    ) async -> Disposition {
        let message: StepMessage
        do {
            message = try StepMessage.decode(body)
        } catch {
            return Self.malformed(error, body: body, routingKey: routingKey, worker: workerID)
        }
        var claim: ClaimOutcome
        do {
            claim = try await claimUnlessRunningHere(message)
            var waited = Duration.zero
            while redelivered, case .leased = claim, waited < settings.lease + .seconds(1), !drain.draining {
                try await Task.sleep(for: .milliseconds(250))
                waited += .milliseconds(250)
                claim = try await claimUnlessRunningHere(message)
            }
        } catch {
            return .requeue("Redis: \(error)")
        }
        if case .run(var claimed) = claim {
            claimed.queue = routingKey
            return await run(claimed, message: message, body: body, routingKey: routingKey, settlement: settlement)
        }
        return await disposition(of: claim, message: message, body: body, routingKey: routingKey)
    }

    /// True when `message` is a copy of a step this worker is running now. Such a copy is a duplicate, as
    /// if its claim had answered `leased`, and it is not claimed at all. Were it claimed after the running step's lease
    /// lapsed (the whole process stalled past it: CPU starvation, a long pause), the claim would take the lease from
    /// this worker's own running step and run the step — and any side effect in flight — a second time.
    func runsHere(_ message: StepMessage) -> Bool {
        leases.isRunning(task: message.task, seq: message.seq, branch: message.branch)
    }

    /// The claim of `message`, or `leased` by this worker without asking Redis when this worker runs that step now
    /// (``runsHere(_:)``).
    private func claimUnlessRunningHere(_ message: StepMessage) async throws -> ClaimOutcome {
        if runsHere(message) { return .leased(by: workerID) }
        return try await store.claim(message, worker: workerID, leaseMilliseconds: settings.leaseMilliseconds)
    }

    /// What to do with a delivery whose claim did not give a step to run.
    func disposition(of claim: ClaimOutcome, message: StepMessage, body: [UInt8], routingKey: String) async -> Disposition {
        switch claim {
        case .run:
            return .requeue("internal: a runnable claim was not run")
        case .missing:
            return .deadLetter(
                deadLetter(
                    message, reason: "stale_seq", error: "the step message names task \(message.task), which Redis does not hold",
                    body: body, routingKey: routingKey))
        case .future(let why):
            return .deadLetter(deadLetter(message, reason: "stale_seq", error: why, body: body, routingKey: routingKey))
        case .stale:
            BatonMetrics.duplicateDeliveries(routingKey).increment()
            await flushOutbox(task: message.task)
            return .ack
        case .stopped(let status):
            recordStopped(message, status: status)
            await flushOutbox(task: message.task)  // a poison step's dead letter
            if let parent = TaskID.parent(of: message.task) { await flushOutbox(task: parent) }  // a woken join step
            return .ack
        case .terminal, .inactive, .leased:
            BatonMetrics.duplicateDeliveries(routingKey).increment()
            return .ack
        }
    }

    static func malformed(_ error: BatonError, body: [UInt8], routingKey: String, worker: String) -> Disposition {
        .deadLetter(
            DeadLetter(
                reason: "malformed", error: error.message, field: error.field, worker: worker, body: String(decoding: body, as: UTF8.self),
                routingKey: routingKey))
    }

    // MARK: - Batches

    /// Handles a batch of deliveries (those the consumer had buffered): claims them in one round trip, runs
    /// their steps concurrently, and commits the steps that finish together in one round trip — the first
    /// to finish waits at most ``batchCommitWindow`` for company, so a long step never holds up a short one.
    /// `settle` is called once per delivery, with its index and what to do with it.
    ///
    /// `claimed` runs once, as soon as the batch's claims are answered: a consumer that waits for it before
    /// taking its next batch lets deliveries gather meanwhile, so batches (and their round trips) stay big.
    public func handleSteps(
        _ deliveries: [StepDelivery], claimed: @Sendable () -> Void = {}, settle: @escaping @Sendable (Int, Disposition) async -> Void
    ) async {
        var decoded: [(index: Int, message: StepMessage)] = []
        for (index, delivery) in deliveries.enumerated() {
            do {
                let message = try StepMessage.decode(delivery.body)
                if runsHere(message) {
                    await settle(
                        index,
                        await disposition(of: .leased(by: workerID), message: message, body: delivery.body, routingKey: delivery.routingKey)
                    )
                } else {
                    decoded.append((index, message))
                }
            } catch {
                await settle(index, Self.malformed(error, body: delivery.body, routingKey: delivery.routingKey, worker: workerID))
            }
        }
        guard !decoded.isEmpty else {
            claimed()
            return
        }
        let entries = decoded.map {
            states.takeEntry(task: $0.message.task, seq: $0.message.seq, branch: $0.message.branch, agent: $0.message.agent)
        }
        // The steps this worker committed the previous step of run at once, without a claim (StepLease); the rest are
        // claimed together.
        var speculative: [(index: Int, message: StepMessage, claimed: ClaimedTask)] = []
        var toClaim: [(index: Int, message: StepMessage, cached: (any Sendable)?)] = []
        let now = Self.milliseconds(Date())
        for ((index, message), entry) in zip(decoded, entries) {
            if let entry, let claimed = speculativeClaim(message, entry: entry, delivery: deliveries[index], now: now) {
                speculative.append((index, message, claimed))
            } else {
                toClaim.append((index, message, entry?.value))
            }
        }
        let claims =
            toClaim.isEmpty
            ? []
            : await store.claimAll(
                toClaim.map(\.message), worker: workerID, leaseMilliseconds: settings.leaseMilliseconds,
                stateCached: toClaim.map { $0.cached != nil })
        claimed()

        enum Event: Sendable {
            case prepared(Int, Pending)
            case tick
            case settled
        }
        await withTaskGroup(of: Event.self) { group in
            var running = 0
            for (index, message, claimed) in speculative {
                let delivery = deliveries[index]
                running += 1
                group.addTask {
                    .prepared(
                        index,
                        await self.execute(
                            claimed, message: message, body: delivery.body, routingKey: delivery.routingKey, settlement: delivery.settlement
                        ))
                }
            }
            for ((index, message, cachedState), claim) in zip(toClaim, claims) {
                let delivery = deliveries[index]
                switch claim {
                case .failure(let error):
                    await settle(index, .requeue("Redis: \(error)"))
                case .success(.run(var claimed)):
                    claimed.queue = delivery.routingKey
                    if let cachedState { claimed.cachedState = cachedState }
                    // A timestamp past the year 5138 is a foreign publisher's garbage, not a time: not measured (and
                    // never converted, which would trap).
                    if let published = delivery.publishedAtSeconds, published < 100_000_000_000 {
                        // Publish (the broker's timestamp, whole seconds) → claim (Redis's clock).
                        BatonMetrics.queueWait(delivery.routingKey).record(
                            BatonMetrics.seconds(milliseconds: claimed.claimedAtMilliseconds - Int64(published) * 1000))
                    }
                    running += 1
                    group.addTask {
                        .prepared(
                            index,
                            await self.execute(
                                claimed, message: message, body: delivery.body, routingKey: delivery.routingKey,
                                settlement: delivery.settlement))
                    }
                case .success(.leased) where delivery.redelivered:
                    // Its holder probably died: wait out the lease on the one-delivery path.
                    group.addTask {
                        await settle(
                            index,
                            await self.handleStep(
                                body: delivery.body, routingKey: delivery.routingKey, redelivered: true, settlement: delivery.settlement))
                        return .settled
                    }
                case .success(let other):
                    await settle(
                        index, await disposition(of: other, message: message, body: delivery.body, routingKey: delivery.routingKey))
                }
            }
            var pending: [(index: Int, commit: PendingCommit)] = []
            var timerArmed = false
            while let event = await group.next() {
                var windowOver = false
                switch event {
                case .prepared(let index, .done(let disposition)):
                    running -= 1
                    await settle(index, disposition)
                case .prepared(let index, .commit(let commit)):
                    running -= 1
                    pending.append((index, commit))
                case .tick:
                    timerArmed = false
                    windowOver = true
                case .settled:
                    continue
                }
                guard !pending.isEmpty else { continue }
                if running == 0 || windowOver {
                    let items = pending
                    pending = []
                    group.addTask {
                        let dispositions = await self.commitBatch(items.map(\.commit))
                        for (item, disposition) in zip(items, dispositions) { await settle(item.index, disposition) }
                        return .settled
                    }
                } else if !timerArmed {
                    timerArmed = true
                    group.addTask {
                        try? await Task.sleep(for: Self.batchCommitWindow)
                        return .tick
                    }
                }
            }
        }
    }

    /// The step of `message` as a speculative claim from this worker's cache entry, or nil when it must be claimed:
    /// speculation off or unsupported, no basis kept, a redelivery (its worker may have died mid-step), a retry, or a
    /// limit the counters already reach.
    func speculativeClaim(_ message: StepMessage, entry: StateCache.Entry, delivery: StepDelivery, now: Int64) -> ClaimedTask? {
        guard settings.speculativeSteps, store.supportsSpeculativeSteps, let basis = entry.basis, !delivery.redelivered,
            message.attempt == 1, !basis.reachesLimit(nowMilliseconds: now)
        else { return nil }
        var claimed = ClaimedTask(
            id: message.task, agent: message.agent, step: message.step, seq: message.seq, branch: message.branch, attempt: 1,
            token: basis.token, stateJSON: [], inputJSON: [], limits: basis.limits, usage: basis.usage, queue: delivery.routingKey,
            claimedAtMilliseconds: now)
        claimed.cachedState = entry.value
        claimed.speculative = true
        speculation.started()
        return claimed
    }

    /// How long a finished step waits for others of its batch to commit with it in one round trip.
    public static let batchCommitWindow: Duration = .milliseconds(2)

    func deadLetter(_ m: StepMessage, reason: String, error: String, bucket: String? = nil, body: [UInt8], routingKey: String) -> DeadLetter
    {
        DeadLetter(
            reason: reason, error: error, task: m.task, agent: m.agent, step: m.step, seq: m.seq, branch: m.branch, attempts: m.attempt,
            bucket: bucket, worker: workerID, body: String(decoding: body, as: UTF8.self), routingKey: routingKey)
    }

    private func run(
        _ claimed: ClaimedTask, message: StepMessage, body: [UInt8], routingKey: String, settlement: (any DeliverySettlement)? = nil
    ) async -> Disposition {
        switch await execute(claimed, message: message, body: body, routingKey: routingKey, settlement: settlement) {
        case .done(let disposition): return disposition
        case .commit(let commit): return await self.commit(commit)
        }
    }

    /// Runs a claimed (or speculative) step and says what to commit (or what to do when there is nothing to commit).
    func execute(
        _ claimed: ClaimedTask, message: StepMessage, body: [UInt8], routingKey: String, settlement: (any DeliverySettlement)?
    ) async -> Pending {
        let lease: StepLease
        if claimed.speculative {
            let store = self.store
            let worker = workerID
            let leaseMilliseconds = settings.leaseMilliseconds
            let counters = speculation
            lease = StepLease(speculativeAfter: claimed.token) {
                counters.claimedLate()
                return await store.claimAll([message], worker: worker, leaseMilliseconds: leaseMilliseconds, stateCached: [true]).first
                    ?? .success(.stale)
            }
        } else {
            lease = StepLease(token: claimed.token)
        }
        let source = StepSource(message: message, body: body, routingKey: routingKey)
        switch await executeStep(claimed, lease: lease, source: source, settlement: settlement) {
        case .done(let disposition): return .done(disposition)
        case .commit(let pending):
            return .commit(PendingCommit(pending, lease: lease, source: source))
        }
    }

    private func executeStep(_ claimed: ClaimedTask, lease: StepLease, source: StepSource, settlement: (any DeliverySettlement)?) async
        -> Pending
    {
        let message = source.message
        let body = source.body
        let routingKey = source.routingKey
        let logger = self.logger.adding([
            "task.id": .string(claimed.id), "task.agent": .string(claimed.agent), "step.name": .string(claimed.step),
            "step.attempt": "\(claimed.attempt)", "task.seq": "\(claimed.seq)",
        ])

        func dead(_ reason: String, _ error: StepError) -> Commit.Kind {
            let letter = deadLetter(message, reason: reason, error: error.message, bucket: error.bucket, body: body, routingKey: routingKey)
            return .dead(reason: reason, errorJSON: Self.errorJSON(error), deadLetter: letter.message)
        }

        guard let runner = registry[claimed.agent] else {
            let error = StepError.permanent("this worker does not serve agent '\(claimed.agent)'", bucket: "unknown_agent")
            return .commit(
                PendingCommit(
                    claimed: claimed, kind: dead("unknown_agent", error), state: String(decoding: claimed.stateJSON, as: UTF8.self),
                    logger: logger, settlement: nil))
        }
        guard runner.steps.contains(claimed.step) else {
            let error = StepError.permanent(
                "agent '\(claimed.agent)' has no step '\(claimed.step)' (steps: \(runner.steps.joined(separator: ", ")))",
                bucket: "unknown_step")
            return .commit(
                PendingCommit(
                    claimed: claimed, kind: dead("permanent_error", error), state: String(decoding: claimed.stateJSON, as: UTF8.self),
                    logger: logger, settlement: nil))
        }

        var claimed = claimed
        if claimed.wakeupJSON.contains("\"trigger\":\"children\"") {
            // A join step: its children's recorded outcomes (one read, join steps only).
            do {
                claimed.childResults = try await store.childResults(task: claimed.id)
            } catch {
                return .done(.requeue("Redis: \(error)"))
            }
        }
        let signals = StepSignals()
        if drain.draining { signals.markDraining() }
        let environment = StepEnvironment(store: store, lease: lease, signals: signals)
        let deadline = ContinuousClock.now + settings.timeSlice
        let held = leases.hold(task: claimed.id, seq: claimed.seq, branch: claimed.branch, lease: lease, signals: signals)
        let started = ContinuousClock.now
        let result = await runner.run(claimed, environment, deadline, logger)
        leases.release(held)
        Self.recordStep(claimed, result: result, took: ContinuousClock.now - started)

        let previousState = String(decoding: claimed.stateJSON, as: UTF8.self)
        let kind: Commit.Kind
        var state = result.stateJSON ?? previousState
        if let json = result.stateJSON, json.utf8.count > settings.checkpointMaxBytes {
            let error = StepError.permanent(
                "the checkpoint of task \(claimed.id) after step '\(claimed.step)' is \(json.utf8.count) bytes, over the \(settings.checkpointMaxBytes)-byte cap (checkpoint.max_bytes): keep large data outside the state and store a reference; the previous checkpoint is kept",
                bucket: "oversized_state")
            logger.warning("checkpoint over the cap", metadata: ["error": "\(error.message)"])
            return .commit(
                PendingCommit(
                    claimed: claimed, kind: dead("oversized", error), state: previousState, logger: logger, settlement: nil,
                    charge: result.uncommitted))
        }
        switch result.outcome {
        case .success(let outcome):
            switch outcome.kind {
            case .next(let step):
                guard runner.steps.contains(step) else {
                    let error = StepError.permanent(
                        "step '\(claimed.step)' returned .next(\"\(step)\"), which agent '\(claimed.agent)' does not declare",
                        bucket: "unknown_step")
                    kind = dead("permanent_error", error)
                    state = previousState
                    break
                }
                kind = .next(step: step)
            case .handoff:
                kind = .handoff
            case .complete(let value):
                kind = .complete(resultJSON: value.jsonString)
            case .fail(let error):
                kind = .fail(errorJSON: Self.errorJSON(error))
            case .sleep(let date, let step):
                if let problem = Self.invalidWait(steps: runner.steps, then: step, onTimeout: nil, triggers: [.at(date)], claimed: claimed)
                {
                    kind = dead("permanent_error", problem)
                    state = previousState
                    break
                }
                kind = .wait(
                    WaitSpec(
                        kind: "sleep", signals: [], delayMilliseconds: nil, atMilliseconds: Self.milliseconds(date), next: step,
                        onTimeout: nil))
            case .sleepFor(let milliseconds, let step):
                if let problem = Self.invalidWait(
                    steps: runner.steps, then: step, onTimeout: nil, triggers: [.timeout(.milliseconds(milliseconds))], claimed: claimed)
                {
                    kind = dead("permanent_error", problem)
                    state = previousState
                    break
                }
                // Relative: the commit adds it to Redis's clock (a sleep's delay is due as a time, not a timeout).
                kind = .wait(
                    WaitSpec(kind: "sleep", signals: [], delayMilliseconds: milliseconds, atMilliseconds: nil, next: step, onTimeout: nil))
            case .wait(let triggers, let step, let onTimeout):
                if let problem = Self.invalidWait(
                    steps: runner.steps, then: step, onTimeout: onTimeout, triggers: triggers, claimed: claimed)
                {
                    kind = dead("permanent_error", problem)
                    state = previousState
                    break
                }
                kind = .wait(Self.waitSpec(triggers, then: step, onTimeout: onTimeout))
            case .parallel(let children, let join):
                switch parallelSpec(children, join: join, steps: runner.steps, claimed: claimed) {
                case .success(let spec): kind = .parallel(spec)
                case .failure(let problem):
                    kind = dead("permanent_error", problem)
                    state = previousState
                }
            }
        case .failure(let error as BudgetExceeded):
            BatonMetrics.failures(claimed.agent, claimed.step, "budget").increment()
            let stepError = StepError.permanent("the \(error.kind) limit was reached", bucket: "budget")
            kind = .budget(kind: error.kind, errorJSON: Self.errorJSON(stepError, code: "budget_exceeded"))
        case .failure(is LeaseLost) where lease.refusal != nil:
            // A speculative step's late claim did not give it to this worker: settle the delivery as that claim says.
            return .done(await refusedDisposition(lease, source))
        case .failure(is LeaseLost):
            BatonMetrics.leaseLost(claimed.agent).increment()
            BatonMetrics.steps(claimed.agent, claimed.step, "lease_lost").increment()
            logger.warning("lease lost during the step; its work is dropped")
            return .done(.ack)
        case .failure(let error):
            let stepError = StepError.classify(error)
            BatonMetrics.failures(claimed.agent, claimed.step, stepError.bucket).increment()
            let maxAttempts = claimed.limits.maxAttempts ?? settings.defaultLimits.maxAttempts ?? 5
            state = previousState
            if stepError.retryable && claimed.attempt < maxAttempts {
                let delay = runner.options.retry.delayMilliseconds(beforeAttempt: claimed.attempt + 1)
                var nextMessage = message
                nextMessage.attempt = claimed.attempt + 1
                nextMessage.step = claimed.step
                kind = .retry(
                    delayMilliseconds: delay, errorJSON: Self.errorJSON(stepError), bucket: stepError.bucket,
                    timer: .step(nextMessage, queue: routingKey))
                logger.info("step failed; retrying", metadata: ["error": "\(stepError)", "retry.delay_ms": "\(delay)"])
            } else {
                let reason = stepError.retryable ? "retries_exhausted" : "permanent_error"
                logger.warning("step failed; dead-lettering", metadata: ["error": "\(stepError)", "reason": "\(reason)"])
                kind = dead(reason, stepError)
            }
        }
        var sticky: (any Sendable)? = nil
        var usageAfter: BudgetUsage? = nil
        switch kind {
        case .next, .handoff:
            sticky = result.sticky  // the state committed is the step's (`result.stateJSON`)
            if result.charged == result.uncommitted {
                // Nothing went through the store: the counters after the commit are exactly these.
                var usage = claimed.usage
                usage.costMicros += result.uncommitted.costMicros
                usage.tokens += result.uncommitted.tokens
                usage.toolCalls += result.uncommitted.toolCalls
                usage.steps += 1
                if case .handoff = kind { usage.handoffs += 1 }
                usageAfter = usage
            }
        default: break
        }
        return .commit(
            PendingCommit(
                claimed: claimed, kind: kind, state: state, logger: logger, settlement: settlement, sticky: sticky,
                charge: result.uncommitted,
                usageAfter: usageAfter))
    }

    /// The committed form of a `parallel` outcome: each child's agent, initial state, first step, queue and
    /// limits (its own, else its agent's defaults); or the permanent error naming what to fix.
    func parallelSpec(_ children: [ChildTask], join: String, steps: [String], claimed: ClaimedTask) -> Result<ParallelSpec, StepError> {
        guard steps.contains(join) else {
            return .failure(
                .permanent(
                    "step '\(claimed.step)' returned .parallel(then: \"\(join)\"), which agent '\(claimed.agent)' does not declare (steps: \(steps.joined(separator: ", ")))",
                    bucket: "unknown_step"))
        }
        if claimed.id.utf8.count(where: { $0 == UInt8(ascii: "/") }) >= TaskID.maxChildDepth, !children.isEmpty {
            return .failure(
                .permanent(
                    "step '\(claimed.step)' of task \(claimed.id) starts children \(TaskID.maxChildDepth + 1) levels deep: children nest at most \(TaskID.maxChildDepth) levels",
                    bucket: "invalid_usage"))
        }
        if children.count > settings.maxChildren {
            return .failure(
                .permanent(
                    "step '\(claimed.step)' started \(children.count) children, over the cap of \(settings.maxChildren) children per task (limits.max_children)",
                    bucket: "max_children"))
        }
        var out: [NewChild] = []
        for (index, child) in children.enumerated() {
            guard let runner = registry[child.agent] else {
                return .failure(
                    .permanent(
                        "child \(index + 1) of step '\(claimed.step)' names agent '\(child.agent)', which no worker here serves (known: \(registry.names.joined(separator: ", ")))",
                        bucket: "unknown_agent"))
            }
            let queue = child.queue ?? runner.options.queue
            guard TaskID.isValidName(queue) else {
                return .failure(
                    .permanent(
                        "child \(index + 1) of step '\(claimed.step)' names queue '\(queue)': a queue name is 1–100 letters, digits, '-', '_' or '.'",
                        bucket: "invalid_usage"))
            }
            do {
                let input = try JSONCoding.encode(child.input)
                let state = try runner.initialState(input)
                let defaults = BudgetLimits(runner.options.defaultBudget, defaults: settings.defaultLimits)
                out.append(
                    NewChild(
                        agent: child.agent, inputJSON: String(decoding: input, as: UTF8.self), stateJSON: state,
                        firstStep: runner.steps.first ?? "start", queue: queue, limits: BudgetLimits(child.budget, defaults: defaults)))
            } catch {
                return .failure(
                    .permanent("child \(index + 1) of step '\(claimed.step)' (agent '\(child.agent)'): \(error)", bucket: "invalid_input"))
            }
        }
        return .success(ParallelSpec(join: join, children: out, maxChildren: settings.maxChildren))
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded(.down)) }

    /// The committed form of a wait: its signal names, the earliest timeout and the earliest time.
    static func waitSpec(_ triggers: [WaitTrigger], then step: String, onTimeout: String?) -> WaitSpec {
        var signals: [String] = []
        var delay: Int64?
        var at: Int64?
        for trigger in triggers {
            switch trigger.base {
            case .signal(let name): if !signals.contains(name) { signals.append(name) }
            case .timeout(let duration):
                let ms = max(0, duration.wholeMilliseconds)
                delay = min(delay ?? ms, ms)
            case .at(let date):
                let ms = milliseconds(date)
                at = min(at ?? ms, ms)
            }
        }
        return WaitSpec(kind: "wait", signals: signals, delayMilliseconds: delay, atMilliseconds: at, next: step, onTimeout: onTimeout)
    }

    /// Why a returned wait or sleep cannot be committed (a bug in the agent: permanent), or nil.
    static func invalidWait(steps: [String], then step: String, onTimeout: String?, triggers: [WaitTrigger], claimed: ClaimedTask)
        -> StepError?
    {
        let agent = claimed.agent
        for name in [step] + (onTimeout.map { [$0] } ?? []) where !steps.contains(name) {
            return .permanent(
                "step '\(claimed.step)' waits to resume at step '\(name)', which agent '\(agent)' does not declare (steps: \(steps.joined(separator: ", ")))",
                bucket: "unknown_step")
        }
        if triggers.isEmpty {
            return .permanent(
                "step '\(claimed.step)' returned .wait(for: []) — name at least one trigger (.signal, .timeout or .at)",
                bucket: "invalid_usage")
        }
        for trigger in triggers {
            if case .signal(let name) = trigger.base, !TaskID.isValidName(name) {
                return .permanent(
                    "step '\(claimed.step)' waits for signal '\(name)': a signal name is 1–100 letters, digits, '-', '_' or '.'",
                    bucket: "invalid_usage")
            }
        }
        return nil
    }

    static func errorJSON(_ error: StepError, code: String? = nil) -> String {
        let value: JSONValue = [
            "code": .string(code ?? error.bucket), "message": .string(error.message), "bucket": .string(error.bucket),
            "retryable": .bool(error.retryable),
        ]
        return value.jsonString
    }

    /// The step's commit request and the message it publishes next.
    func request(_ p: PendingCommit) -> (Commit, next: OutboxMessage?) {
        let claimed = p.claimed
        var next: OutboxMessage? = nil
        switch p.kind {
        case .next(let step):
            next = .step(
                StepMessage(task: claimed.id, agent: claimed.agent, step: step, seq: claimed.seq + 1, branch: claimed.branch, attempt: 1),
                queue: claimed.queue)
        case .handoff:
            next = .step(
                StepMessage(
                    task: claimed.id, agent: claimed.agent, step: claimed.step, seq: claimed.seq + 1, branch: claimed.branch, attempt: 1),
                queue: claimed.queue)
        default:
            break
        }
        var eventData = workerEventData
        switch p.kind {
        case .retry(let delay, let error, _, _): eventData = "{\"delay_ms\":\(delay),\"error\":\(error)}"
        case .dead(_, let error, _), .fail(let error), .budget(_, let error): eventData = error
        default: break
        }
        let lease = p.lease?.snapshot ?? (token: claimed.token, speculative: false)
        var request = Commit(
            task: claimed.id, token: lease.token, seq: claimed.seq, kind: p.kind, stateJSON: p.state, next: next, eventDataJSON: eventData,
            charge: p.charge)
        if lease.speculative { request.speculative = (claimed.step, claimed.branch, claimed.limits.fingerprint) }
        request.settledEvent = settledPublishes.take(task: claimed.id)
        return (request, next)
    }

    /// A speculative step whose outcome only a claimed step commits (a failure, a wait, a budget stop, …) is claimed
    /// first. Nil when the commit may go ahead; else how to settle the delivery (the late claim did not give the step
    /// to this worker).
    func claimIfNeeded(_ p: PendingCommit) async -> Disposition? {
        guard let lease = p.lease, lease.isSpeculative else { return nil }
        switch p.kind {
        case .next, .handoff, .complete, .fail: return nil
        default: break
        }
        if await lease.claimed() != nil { return nil }
        return await refusedDisposition(lease, p.source)
    }

    /// A speculative step whose commit came back ``CommitOutcome/unclaimed``: claimed now, then committed as a claimed
    /// step (its state was read at the same seq and branch, which the claim checks).
    func commitAfterLateClaim(_ p: PendingCommit) async -> Disposition {
        guard let lease = p.lease, await lease.claimed() != nil else {
            return await refusedDisposition(p.lease, p.source)
        }
        return await commit(p)
    }

    /// How to settle a delivery whose speculative step's late claim did not give it to this worker: as that claim
    /// says (a duplicate, a task stopped or moved on, Redis unreachable).
    func refusedDisposition(_ lease: StepLease?, _ source: StepSource?) async -> Disposition {
        speculation.refused()
        guard let source, let refusal = lease?.refusal else { return .ack }
        switch refusal {
        case .failure(let error): return .requeue("Redis: \(error)")
        case .success(let outcome):
            return await disposition(of: outcome, message: source.message, body: source.body, routingKey: source.routingKey)
        }
    }

    func commit(_ p: PendingCommit) async -> Disposition {
        if let settled = await claimIfNeeded(p) { return settled }
        let (request, next) = request(p)
        do {
            let outcome: CommitOutcome
            do {
                outcome = try await store.commit(request)
            } catch {
                await settledPublishes.send(request.settledEvent)
                throw error
            }
            if case .unclaimed = outcome {
                await settledPublishes.send(request.settledEvent)
                return await commitAfterLateClaim(p)
            }
            if case .fenced = outcome { await settledPublishes.send(request.settledEvent) }
            let (disposition, hop) = await finish(p, next: next, outcome: outcome)
            if let hop { hop.settlement.settle([hop]) }
            if case .committed(_, _, _, let event?) = outcome { publishEvents([event]) }
            return disposition
        } catch {
            // Unknown whether it committed: leave the delivery unacked for redelivery; the seq check dedupes.
            return .requeue("commit: \(error)")
        }
    }

    /// Commits several finished steps in one round trip.
    func commitBatch(_ items: [PendingCommit]) async -> [Disposition] {
        var dispositions = [Disposition?](repeating: nil, count: items.count)
        var ready: [Int] = []
        for (index, item) in items.enumerated() {
            if let settled = await claimIfNeeded(item) { dispositions[index] = settled } else { ready.append(index) }
        }
        let requests = ready.map { request(items[$0]) }
        let outcomes = requests.isEmpty ? [] : await store.commitAll(requests.map(\.0))
        var hops: [SettlementHop] = []
        var events: [InlineEvent] = []
        var unclaimed: [Int] = []
        for (index, (request, outcome)) in zip(ready, zip(requests, outcomes)) {
            switch outcome {
            case .success(.unclaimed):
                await settledPublishes.send(request.0.settledEvent)
                unclaimed.append(index)
            case .success(let outcome):
                if case .fenced = outcome { await settledPublishes.send(request.0.settledEvent) }
                let (disposition, hop) = await finish(items[index], next: request.next, outcome: outcome)
                dispositions[index] = disposition
                if let hop { hops.append(hop) }
                if case .committed(_, _, _, let event?) = outcome { events.append(event) }
            case .failure(let error):
                await settledPublishes.send(request.0.settledEvent)
                dispositions[index] = .requeue("commit: \(error)")
            }
        }
        // The next-step publishes of the batch and its events go to the broker in one hand-off.
        if let first = hops.first {
            let settled = self.settledPublishes
            let published = events
            first.settlement.settle(hops, events: events.flatMap(\.messages)) { results in Self.eventsSettled(published, results, settled) }
        } else {
            publishEvents(events)
        }
        for index in unclaimed { dispositions[index] = await commitAfterLateClaim(items[index]) }
        return dispositions.map { $0 ?? .requeue("internal: a commit of the batch was not answered") }
    }

    /// Publishes the events the commits returned (the hot path's own events) in one hand-off, and once the broker
    /// confirmed them moves their tasks' relay cursors (``SettledPublishes``: usually with the task's next commit);
    /// without waiting. What is not confirmed stays for the relay.
    func publishEvents(_ events: [InlineEvent]) {
        guard !events.isEmpty else { return }
        let bus = self.bus
        let settled = self.settledPublishes
        Task {
            let results = await bus.publish(events.flatMap(\.messages))
            Self.eventsSettled(events, results.map { $0 == nil }, settled)
        }
    }

    /// Moves on the relay cursor of each event the broker confirmed (`confirmed`: one entry per message).
    static func eventsSettled(_ events: [InlineEvent], _ confirmed: [Bool], _ settled: SettledPublishes) {
        var offset = 0
        var published: [InlineEvent] = []
        for event in events {
            // Confirmed only when every message it holds is (the cursor moves past all of them).
            let end = offset + event.count
            if end <= confirmed.count, confirmed[offset..<end].allSatisfy({ $0 }) { published.append(event) }
            offset = end
        }
        settled.eventsPublished(published)
    }

    /// What follows a commit: the ack, or the publish of its outbox with the late ack — returned as a hop for
    /// the caller to hand to the broker (a batch hands all its hops over together).
    private func finish(_ p: PendingCommit, next: OutboxMessage?, outcome: CommitOutcome) async -> (Disposition, SettlementHop?) {
        let claimed = p.claimed
        let logger = p.logger
        let kind = p.kind
        let settlement = p.settlement
        switch outcome {
        case .fenced:
            BatonMetrics.leaseLost(claimed.agent).increment()
            BatonMetrics.steps(claimed.agent, claimed.step, "fenced").increment()
            logger.warning("commit refused: the lease was lost (fenced off); the step's work is dropped")
            return (.ack, nil)
        case .unclaimed:
            return (.requeue("internal: a speculative step's commit was not claimed"), nil)
        case .committed(let status, let seq, let outboxID, _):
            CrashPoint.hit("after_commit", task: claimed.id, seq: claimed.seq)
            if status == "queued", let sticky = p.sticky {
                // What the next step needs to run speculatively on this worker, when exact (SpeculationBasis).
                var basis: SpeculationBasis? = nil
                if let usage = p.usageAfter, !claimed.tenantLimited, TaskID.parent(of: claimed.id) == nil {
                    basis = SpeculationBasis(
                        token: p.lease?.token ?? claimed.token, limits: p.lease?.claimedLimits ?? claimed.limits, usage: usage)
                }
                states.put(task: claimed.id, seq: seq, branch: claimed.branch, agent: claimed.agent, value: sticky, basis: basis)
            }
            recordCommit(claimed, kind: kind, status: status)
            if TaskView.terminalStatuses.contains(status), let parent = TaskID.parent(of: claimed.id) {
                // A child's end may have woken its parent: publish the join step now, not at the next outbox sweep.
                await flushOutbox(task: parent)
            }
            if case .parallel = kind {
                // The children's first step messages (or, with no children, the join step's).
                await flushOutbox(task: claimed.id)
                return (.ack, nil)
            }
            if case .wait = kind {
                // Woken at once (an early signal, a time already passed): the wake wrote the resumed step.
                if outboxID != nil { await flushOutbox(task: claimed.id) }
                return (.ack, nil)
            }
            if let outboxID {
                let message: OutboxMessage? =
                    switch kind {
                    case .dead(_, _, let letter): letter
                    default: next
                    }
                if let message, let settlement {
                    let store = self.store
                    let task = claimed.id
                    let seq = claimed.seq
                    let hop = SettlementHop(
                        settlement: settlement, message: message, beforeAck: { CrashPoint.hit("after_publish", task: task, seq: seq) },
                        confirmed: { ok in if ok { store.outboxDoneWithoutWaiting(task: task, ids: [outboxID]) } })
                    return (.settled, hop)
                }
                if let message {
                    let results = await bus.publish([message])
                    if results.first.map({ $0 == nil }) ?? false {
                        try? await store.outboxDone(task: claimed.id, ids: [outboxID])
                    } else {
                        logger.warning(
                            "outbox publish failed; the outbox sweep retries it",
                            metadata: ["error": "\(String(describing: results.first ?? nil))"])
                    }
                }
            }
            CrashPoint.hit("after_publish", task: claimed.id, seq: claimed.seq)
            return (.ack, nil)
        }
    }
}

/// What a step produced before its commit.
enum Pending: Sendable {
    /// Nothing to commit: settle the delivery so.
    case done(Disposition)
    case commit(PendingCommit)
}

/// The delivery a step came from.
struct StepSource: Sendable {
    var message: StepMessage
    var body: [UInt8]
    var routingKey: String
}

/// A finished step waiting for its commit.
///
/// A class, immutable once made: a step's pending commit passes through the task group's events, the batch's arrays
/// and the commit's closures, and as a struct each of those copies retained and released its dozen references.
final class PendingCommit: Sendable {
    let claimed: ClaimedTask
    let kind: Commit.Kind
    let state: String
    let logger: Logger
    let settlement: (any DeliverySettlement)?
    /// The decoded input and state to keep in the worker's ``StateCache`` once the commit queued the next step.
    let sticky: (any Sendable)?
    /// The step's charges that only its commit records (``Commit/charge``).
    let charge: Charge
    /// The step's lease (speculative until claimed, ``StepLease``) and its delivery.
    let lease: StepLease?
    let source: StepSource?
    /// The task's counters after this commit, when exact (``SpeculationBasis``).
    let usageAfter: BudgetUsage?

    init(
        claimed: ClaimedTask, kind: Commit.Kind, state: String, logger: Logger, settlement: (any DeliverySettlement)?,
        sticky: (any Sendable)? = nil, charge: Charge = Charge(), lease: StepLease? = nil, source: StepSource? = nil,
        usageAfter: BudgetUsage? = nil
    ) {
        self.claimed = claimed
        self.kind = kind
        self.state = state
        self.logger = logger
        self.settlement = settlement
        self.sticky = sticky
        self.charge = charge
        self.lease = lease
        self.source = source
        self.usageAfter = usageAfter
    }

    /// `pending` with the step's lease and delivery.
    convenience init(_ pending: PendingCommit, lease: StepLease, source: StepSource) {
        self.init(
            claimed: pending.claimed, kind: pending.kind, state: pending.state, logger: pending.logger, settlement: pending.settlement,
            sticky: pending.sticky, charge: pending.charge, lease: lease, source: source, usageAfter: pending.usageAfter)
    }
}

/// One delivery of a step message, for ``StepExecutor/handleSteps(_:settle:)``.
public struct StepDelivery: Sendable {
    public var body: [UInt8]
    public var routingKey: String
    public var redelivered: Bool
    public var settlement: (any DeliverySettlement)?
    /// When the message was published (its AMQP `timestamp`, Unix seconds), for `baton_step_queue_wait_seconds`.
    public var publishedAtSeconds: UInt64?

    public init(
        body: [UInt8], routingKey: String, redelivered: Bool, settlement: (any DeliverySettlement)?, publishedAtSeconds: UInt64? = nil
    ) {
        self.body = body
        self.routingKey = routingKey
        self.redelivered = redelivered
        self.settlement = settlement
        self.publishedAtSeconds = publishedAtSeconds
    }
}
