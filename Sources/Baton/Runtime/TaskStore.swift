/// The seam between the step protocol and where task state lives: Redis in production
/// (``RedisTaskStore``), memory in unit tests (`BatonTesting`). Both apply the same rules: fencing tokens,
/// seq checks, budgets, exactly-once effects.
public protocol TaskStore: Sendable {
    func submit(_ task: NewTask) async throws -> SubmitOutcome
    func claim(_ message: StepMessage, worker: String, leaseMilliseconds: Int64) async throws -> ClaimOutcome
    func renewLease(task: String, token: Int64, worker: String, leaseMilliseconds: Int64) async throws -> LeaseStatus
    /// Adds charges to the attempt's pending counters; returns the limit crossed, if any.
    func charge(task: String, token: Int64, _ charge: Charge) async throws -> ChargeOutcome
    /// The recorded result of a side effect (its charges are applied again to this attempt), or nil.
    func effect(task: String, token: Int64, key: String) async throws -> EffectLookup
    /// Records a side effect's result and charges (first writer wins; the recorded one is returned).
    func recordEffect(task: String, token: Int64, key: String, record: EffectRecord) async throws -> EffectLookup
    func progress(task: String, token: Int64, fraction: Double, message: String) async throws
    func commit(_ commit: Commit) async throws -> CommitOutcome
    /// Removes published outbox entries.
    func outboxDone(task: String, ids: [String]) async throws
    /// The outbox entries of a task that are not yet confirmed as published.
    func pendingOutbox(task: String) async throws -> [String: OutboxMessage]
    /// Removes published outbox entries without waiting (the outbox sweep repeats what is lost).
    func outboxDoneWithoutWaiting(task: String, ids: [String])
    /// Records that these commits' events were published and confirmed (moves each task's relay cursor past
    /// its event). An event not recorded here is published again by the relay after its lease.
    func eventsPublished(_ events: [InlineEvent]) async
    /// Whether ``commit(_:)`` applies ``Commit/settledEvent``; when false, the worker moves the cursor on its own at
    /// once.
    var carriesSettledPublishes: Bool { get }
    /// Whether ``commit(_:)`` takes speculative steps (``Commit/speculative``, ``StepLease``): checks in the commit what
    /// a claim would have checked, and answers ``CommitOutcome/unclaimed`` when that fails. When false, every step
    /// is claimed first.
    var supportsSpeculativeSteps: Bool { get }
    /// Claims the steps of a batch of deliveries together (Redis: one round trip); one result per message.
    /// `stateCached[i]`: the worker holds message i's checkpoint and input decoded (``StateCache``), so a store may
    /// leave `stateJSON` and `inputJSON` empty in its claim (Redis does; the in-memory store returns them anyway).
    func claimAll(_ messages: [StepMessage], worker: String, leaseMilliseconds: Int64, stateCached: [Bool]) async -> [Result<
        ClaimOutcome, any Error
    >]
    /// Commits several steps together (Redis: one round trip); one result per commit, in order.
    func commitAll(_ commits: [Commit]) async -> [Result<CommitOutcome, any Error>]
    /// Delivers a signal to a task's mailbox, deduplicated by its id; wakes the task at once when it waits
    /// for that signal (then the resumed step's message is in the task's outbox).
    func signal(_ signal: TaskSignal) async throws -> SignalOutcome
    /// Fires a wait or sleep timer (`timer` is the member the commit recorded): wakes the task when it
    /// still waits on that very timer (the resumed step's message goes to its outbox); otherwise nothing.
    /// Returns whether it woke the task.
    func fireWaitTimer(task: String, timer: String) async throws -> Bool
    /// The recorded outcomes of a task's ended children: child id → `{"status", "result", "error"}` JSON.
    func childResults(task: String) async throws -> [String: String]
}

/// A signal for one task: from the CLI (`baton signal`, `approve`, `reject`), the `baton.signals`
/// exchange or the HTTP API.
public struct TaskSignal: Sendable, Hashable {
    public var task: String
    public var name: String
    /// The payload as JSON text (`""` for none).
    public var payloadJSON: String
    /// The dedupe id: a second signal with the same id for the same task is a no-op.
    public var id: String
    public var actor: String
    public var reason: String
    /// An approver's edit (`baton approve --edit`): the RFC 7396 merge patch that made ``payloadJSON`` from the
    /// document it was applied to (see ``TaskSignal/approval(task:base:edit:id:actor:reason:)``); recorded in the
    /// `signal_received` event as `edit` with `edited_by`.
    public var edit: JSONValue?

    public init(task: String, name: String, payloadJSON: String = "", id: String? = nil, actor: String, reason: String = "") {
        self.task = task
        self.name = name
        self.payloadJSON = payloadJSON
        self.id = id ?? TaskID.generate()
        self.actor = actor
        self.reason = reason
    }

    /// The `signal_received` event's data.
    public var eventDataJSON: String {
        var object: [String: JSONValue] = ["name": .string(name), "id": .string(id), "actor": .string(actor), "reason": .string(reason)]
        if !payloadJSON.isEmpty { object["payload"] = (try? JSONValue.parse(Array(payloadJSON.utf8))) ?? .string(payloadJSON) }
        if let edit {
            object["edit"] = edit
            object["edited_by"] = .string(actor)
        }
        return JSONValue.object(object).jsonString
    }

    /// The signal `approve`. With `edit` (an RFC 7396 JSON merge patch), its payload is `base` with the patch
    /// applied, so the waiting step's `context.wakeup` payload carries the edited document, and the history's
    /// `signal_received` event keeps the patch and who made it. Without `edit` the payload is `base` (none when nil).
    public static func approval(task: String, base: JSONValue?, edit: JSONValue?, id: String? = nil, actor: String, reason: String)
        -> TaskSignal
    {
        var payload = base
        if let edit { payload = (base ?? .object([:])).applyingMergePatch(edit) }
        var signal = TaskSignal(task: task, name: "approve", payloadJSON: payload?.jsonString ?? "", id: id, actor: actor, reason: reason)
        signal.edit = edit
        return signal
    }
}

/// What delivering a signal did.
public enum SignalOutcome: Sendable, Equatable {
    /// The task waited for it and woke (its resumed step's message is in the outbox).
    case woke
    /// Kept in the task's mailbox (the task is not waiting for it yet); the task's status.
    case stored(status: String)
    /// A signal with this id was already received: nothing changed.
    case duplicate(status: String)
    case notFound
    /// The task already finished.
    case terminal(status: String)
    /// The task's mailbox holds `cap` unconsumed signals: this one was refused (not dropped silently).
    case mailboxFull(cap: Int)
}

/// Limits of signal mailboxes (documented defaults).
public enum SignalLimits {
    /// Unconsumed signals kept per task; one more is refused with ``SignalOutcome/mailboxFull(cap:)``.
    public static let mailboxCap = 100
    /// Signal ids remembered per task for deduplication (oldest forgotten first).
    public static let seenIDsKept = 1000
    /// The largest signal payload (JSON bytes).
    public static let payloadMaxBytes = 64 * 1024
}

extension TaskStore {
    public func outboxDoneWithoutWaiting(task: String, ids: [String]) {
        Task { try? await outboxDone(task: task, ids: ids) }
    }

    public func eventsPublished(_ events: [InlineEvent]) async {}

    public var carriesSettledPublishes: Bool { false }

    public var supportsSpeculativeSteps: Bool { false }

    public func claimAll(_ messages: [StepMessage], worker: String, leaseMilliseconds: Int64, stateCached: [Bool]) async -> [Result<
        ClaimOutcome, any Error
    >] {
        var results: [Result<ClaimOutcome, any Error>] = []
        for message in messages {
            do {
                results.append(.success(try await claim(message, worker: worker, leaseMilliseconds: leaseMilliseconds)))
            } catch {
                results.append(.failure(error))
            }
        }
        return results
    }

    public func commitAll(_ commits: [Commit]) async -> [Result<CommitOutcome, any Error>] {
        var results: [Result<CommitOutcome, any Error>] = []
        for request in commits {
            do {
                results.append(.success(try await commit(request)))
            } catch {
                results.append(.failure(error))
            }
        }
        return results
    }
}

/// Charges of one call: integer micro-dollars, tokens, tool calls.
public struct Charge: Sendable, Hashable, Codable {
    public var costMicros: Int64
    public var tokens: Int64
    public var toolCalls: Int64

    public init(costMicros: Int64 = 0, tokens: Int64 = 0, toolCalls: Int64 = 0) {
        self.costMicros = costMicros
        self.tokens = tokens
        self.toolCalls = toolCalls
    }

    public static func + (a: Charge, b: Charge) -> Charge {
        Charge(costMicros: a.costMicros + b.costMicros, tokens: a.tokens + b.tokens, toolCalls: a.toolCalls + b.toolCalls)
    }

    public var isZero: Bool { costMicros == 0 && tokens == 0 && toolCalls == 0 }

    /// Dollars to integer micro-dollars, rounded to the nearest; saturating at ± one billion dollars (NaN is 0), so
    /// an absurd amount is a large number, never a trap in the worker.
    public static func micros(fromUSD usd: Double) -> Int64 {
        guard !usd.isNaN else { return 0 }
        let limit = 1_000_000_000_000_000.0
        return Int64(min(max((usd * 1_000_000).rounded(), -limit), limit))
    }
}

/// A side effect's recorded result and what it cost.
public struct EffectRecord: Sendable, Hashable, Codable {
    /// The result, as JSON text.
    public var result: String
    public var charge: Charge

    public init(result: String, charge: Charge) {
        self.result = result
        self.charge = charge
    }

    enum CodingKeys: String, CodingKey {
        case result = "r"
        case cost = "c"
        case tokens = "t"
        case toolCalls = "k"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        result = try c.decode(JSONValue.self, forKey: .result).jsonString
        charge = Charge(
            costMicros: try c.decodeIfPresent(Int64.self, forKey: .cost) ?? 0,
            tokens: try c.decodeIfPresent(Int64.self, forKey: .tokens) ?? 0,
            toolCalls: try c.decodeIfPresent(Int64.self, forKey: .toolCalls) ?? 0)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(try JSONValue.parse(Array(result.utf8)), forKey: .result)
        try c.encode(charge.costMicros, forKey: .cost)
        try c.encode(charge.tokens, forKey: .tokens)
        try c.encode(charge.toolCalls, forKey: .toolCalls)
    }
}

public enum EffectLookup: Sendable {
    case absent
    case recorded(EffectRecord, exceeded: String?)
    case fenced
}

public enum ChargeOutcome: Sendable, Equatable {
    case ok
    case exceeded(String)
    case fenced
}

public enum LeaseStatus: Sendable, Equatable {
    case held(cancelRequested: Bool, pauseRequested: Bool)
    case lost
}

/// A message committed to a task's outbox: published with confirms after the commit.
public struct OutboxMessage: Sendable, Hashable, Codable {
    public var exchange: String
    public var routingKey: String
    public var body: String
    public var headers: [String: String]

    public init(exchange: String, routingKey: String, body: String, headers: [String: String] = [:]) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.headers = headers
    }

    enum CodingKeys: String, CodingKey {
        case exchange = "x"
        case routingKey = "k"
        case body = "b"
        case headers = "h"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        exchange = try c.decode(String.self, forKey: .exchange)
        routingKey = try c.decode(String.self, forKey: .routingKey)
        body = try c.decode(String.self, forKey: .body)
        headers = (try? c.decodeIfPresent([String: String].self, forKey: .headers)) ?? [:]
    }

    /// The step message to run `message`.
    public static func step(_ message: StepMessage, queue: String) -> OutboxMessage {
        OutboxMessage(
            exchange: Topology.stepsExchange, routingKey: queue, body: message.jsonText,
            headers: ["x-baton-task": message.task])
    }
}

/// A task to create.
public struct NewTask: Sendable {
    public var id: String
    public var agent: String
    public var inputJSON: String
    public var stateJSON: String
    public var firstStep: String
    public var queue: String
    public var limits: BudgetLimits
    public var tenant: String
    public var labelsJSON: String
    public var notifyJSON: String
    public var parent: String
    /// The id of the first step's outbox entry; nil: the store makes one. A submitter that names it publishes the first
    /// step itself and removes that entry, with no read of the outbox.
    public var outboxID: String? = nil

    public init(
        id: String, agent: String, inputJSON: String, stateJSON: String, firstStep: String, queue: String, limits: BudgetLimits,
        tenant: String = "", labelsJSON: String = "{}", notifyJSON: String = "{}", parent: String = ""
    ) {
        self.id = id
        self.agent = agent
        self.inputJSON = inputJSON
        self.stateJSON = stateJSON
        self.firstStep = firstStep
        self.queue = queue
        self.limits = limits
        self.tenant = tenant
        self.labelsJSON = labelsJSON
        self.notifyJSON = notifyJSON
        self.parent = parent
    }

    /// The first step message.
    public var firstMessage: StepMessage { StepMessage(task: id, agent: agent, step: firstStep, seq: 0, branch: 0, attempt: 1) }
}

/// The children of a `parallel` step, as committed.
public struct ParallelSpec: Sendable {
    /// The step that runs once every child has ended.
    public var join: String
    public var children: [NewChild]
    /// Children per task (over a task's life): `limits.max_children`.
    public var maxChildren: Int

    public init(join: String, children: [NewChild], maxChildren: Int) {
        self.join = join
        self.children = children
        self.maxChildren = maxChildren
    }

    /// The JSON the commit script reads (limit values as strings: Lua numbers lose digits).
    public var json: String {
        let list: [JSONValue] = children.map { child in
            var limits: [JSONValue] = []
            for (name, value) in child.limits.fields {
                limits.append(.string(name))
                limits.append(.string(String(value)))
            }
            return [
                "agent": .string(child.agent), "input": .string(child.inputJSON), "state": .string(child.stateJSON),
                "step": .string(child.firstStep), "queue": .string(child.queue), "limits": .array(limits),
            ]
        }
        return JSONValue.object([
            "join": .string(join), "cap": .int(Int64(maxChildren)), "children": .array(list),
            "max_result": .int(Int64(ChildLimits.resultMaxBytes)),
        ]).jsonString
    }
}

/// One child to create in a `parallel` commit (its id is assigned by the store: `<parent>/<n>`).
public struct NewChild: Sendable {
    public var agent: String
    public var inputJSON: String
    public var stateJSON: String
    public var firstStep: String
    public var queue: String
    public var limits: BudgetLimits

    public init(agent: String, inputJSON: String, stateJSON: String, firstStep: String, queue: String, limits: BudgetLimits) {
        self.agent = agent
        self.inputJSON = inputJSON
        self.stateJSON = stateJSON
        self.firstStep = firstStep
        self.queue = queue
        self.limits = limits
    }
}

/// Limits of fan-out (documented defaults).
public enum ChildLimits {
    /// Children per task over its life (`limits.max_children`); one more fails the task (`max_children`).
    public static let maxChildren = 100
    /// The largest child result + error (JSON bytes) kept for the join; a larger one is kept as
    /// `{"status", "truncated": true}`.
    public static let resultMaxBytes = 64 * 1024
}

/// Budget limits as stored (integers; cost in micro-dollars, deadline in Unix milliseconds). nil = no limit.
public struct BudgetLimits: Sendable, Hashable, Codable {
    public var maxCostMicros: Int64?
    public var maxTokens: Int64?
    public var maxSteps: Int64?
    public var maxToolCalls: Int64?
    public var maxHandoffs: Int64?
    public var maxAttempts: Int64?
    public var deadlineMilliseconds: Int64?
    /// A reached cap parks the task in `needs_review` (for a human to raise or stop) instead of stopping it
    /// (`budget.on_limit: "review"`).
    public var reviewOnLimit: Bool = false

    public init(
        maxCostMicros: Int64? = nil, maxTokens: Int64? = nil, maxSteps: Int64? = nil, maxToolCalls: Int64? = nil, maxHandoffs: Int64? = nil,
        maxAttempts: Int64? = nil, deadlineMilliseconds: Int64? = nil, reviewOnLimit: Bool = false
    ) {
        self.reviewOnLimit = reviewOnLimit
        self.maxCostMicros = maxCostMicros
        self.maxTokens = maxTokens
        self.maxSteps = maxSteps
        self.maxToolCalls = maxToolCalls
        self.maxHandoffs = maxHandoffs
        self.maxAttempts = maxAttempts
        self.deadlineMilliseconds = deadlineMilliseconds
    }

    /// The limits of a submit, each field falling back to `defaults`.
    public init(_ request: BudgetRequest?, defaults: BudgetLimits) {
        self.init(
            maxCostMicros: request?.maxCostUSD.map(Charge.micros(fromUSD:)) ?? defaults.maxCostMicros,
            maxTokens: request?.maxTokens ?? defaults.maxTokens, maxSteps: request?.maxSteps ?? defaults.maxSteps,
            maxToolCalls: request?.maxToolCalls ?? defaults.maxToolCalls, maxHandoffs: request?.maxHandoffs ?? defaults.maxHandoffs,
            maxAttempts: request?.maxAttempts ?? defaults.maxAttempts,
            deadlineMilliseconds: request?.deadline.map { Int64($0.timeIntervalSince1970 * 1000) } ?? defaults.deadlineMilliseconds,
            reviewOnLimit: request?.onLimit.map { $0 == .review } ?? defaults.reviewOnLimit)
    }

    /// The limits a speculative step ran under, as its commit compares them with the stored ones (the commit script's
    /// `limits_of`): a limit raised or lowered since makes the step claim late.
    var fingerprint: String {
        // Appended in place (it is built for every speculative commit): no array of optionals, no joined copy.
        var out = ""
        out.reserveCapacity(64)
        func add(_ limit: Int64?) {
            if let limit { out += String(limit) }
            out += ","
        }
        add(maxCostMicros)
        add(maxTokens)
        add(maxSteps)
        add(maxToolCalls)
        add(maxHandoffs)
        add(deadlineMilliseconds)
        if reviewOnLimit { out += "1" }
        return out
    }

    /// The stored field names and values.
    var fields: [(String, Int64)] {
        var out: [(String, Int64)] = []
        if let maxCostMicros { out.append(("max_cost", maxCostMicros)) }
        if let maxTokens { out.append(("max_tokens", maxTokens)) }
        if let maxSteps { out.append(("max_steps", maxSteps)) }
        if let maxToolCalls { out.append(("max_tool_calls", maxToolCalls)) }
        if let maxHandoffs { out.append(("max_handoffs", maxHandoffs)) }
        if let maxAttempts { out.append(("max_attempts", maxAttempts)) }
        if let deadlineMilliseconds { out.append(("deadline", deadlineMilliseconds)) }
        if reviewOnLimit { out.append(("review_on_limit", 1)) }
        return out
    }

    init(fields: [String: String]) {
        func get(_ key: String) -> Int64? { fields[key].flatMap { Int64($0) } }
        self.init(
            maxCostMicros: get("max_cost"), maxTokens: get("max_tokens"), maxSteps: get("max_steps"), maxToolCalls: get("max_tool_calls"),
            maxHandoffs: get("max_handoffs"), maxAttempts: get("max_attempts"), deadlineMilliseconds: get("deadline"),
            reviewOnLimit: fields["review_on_limit"] == "1")
    }
}

/// Committed counters.
public struct BudgetUsage: Sendable, Hashable, Codable {
    public var costMicros: Int64 = 0
    public var tokens: Int64 = 0
    public var steps: Int64 = 0
    public var toolCalls: Int64 = 0
    public var handoffs: Int64 = 0

    public init(costMicros: Int64 = 0, tokens: Int64 = 0, steps: Int64 = 0, toolCalls: Int64 = 0, handoffs: Int64 = 0) {
        self.costMicros = costMicros
        self.tokens = tokens
        self.steps = steps
        self.toolCalls = toolCalls
        self.handoffs = handoffs
    }

    init(fields: [String: String]) {
        func get(_ key: String) -> Int64 { fields[key].flatMap { Int64($0) } ?? 0 }
        self.init(
            costMicros: get("cost"), tokens: get("tokens"), steps: get("steps"), toolCalls: get("tool_calls"), handoffs: get("handoffs"))
    }
}

public enum SubmitOutcome: Sendable, Equatable {
    case created
    case exists(status: String)
}

/// A task claimed for one step under a lease.
///
/// A value type with copy-on-write storage: a claimed task goes by value through the batch's arrays, the step's task
/// and closures, its context and its pending commit, and as eighteen stored fields (strings, byte arrays, the budget)
/// each copy retained and released every one (~10 % of a worker's retains on the step chain, perf uprobes, twentieth
/// session); a copy now retains one reference, and a write copies the fields only when the storage is shared.
public struct ClaimedTask: Sendable {
    /// Written only through a uniquely referenced reference (``ClaimedTask/mutableStorage``), as the standard
    /// library's collections do: a shared storage is copied first, so no two values ever see one change.
    private final class Storage: @unchecked Sendable {
        var id: String
        var agent: String
        var step: String
        var seq: Int64
        var branch: Int64
        var attempt: Int64
        var token: Int64
        var stateJSON: [UInt8]
        var inputJSON: [UInt8]
        var limits: BudgetLimits
        var usage: BudgetUsage
        var tenantLimited: Bool
        var queue: String
        var wakeupJSON: String
        var claimedAtMilliseconds: Int64
        var childResults: [String: String]
        var cachedState: (any Sendable)?
        var speculative: Bool

        init(
            id: String, agent: String, step: String, seq: Int64, branch: Int64, attempt: Int64, token: Int64, stateJSON: [UInt8],
            inputJSON: [UInt8], limits: BudgetLimits, usage: BudgetUsage, queue: String, wakeupJSON: String,
            claimedAtMilliseconds: Int64
        ) {
            self.id = id
            self.agent = agent
            self.step = step
            self.seq = seq
            self.branch = branch
            self.attempt = attempt
            self.token = token
            self.stateJSON = stateJSON
            self.inputJSON = inputJSON
            self.limits = limits
            self.usage = usage
            self.tenantLimited = false
            self.queue = queue
            self.wakeupJSON = wakeupJSON
            self.claimedAtMilliseconds = claimedAtMilliseconds
            self.childResults = [:]
            self.cachedState = nil
            self.speculative = false
        }

        init(copying other: Storage) {
            id = other.id
            agent = other.agent
            step = other.step
            seq = other.seq
            branch = other.branch
            attempt = other.attempt
            token = other.token
            stateJSON = other.stateJSON
            inputJSON = other.inputJSON
            limits = other.limits
            usage = other.usage
            tenantLimited = other.tenantLimited
            queue = other.queue
            wakeupJSON = other.wakeupJSON
            claimedAtMilliseconds = other.claimedAtMilliseconds
            childResults = other.childResults
            cachedState = other.cachedState
            speculative = other.speculative
        }
    }

    private var storage: Storage

    private var mutableStorage: Storage {
        mutating get {
            if !isKnownUniquelyReferenced(&storage) { storage = Storage(copying: storage) }
            return storage
        }
    }

    public var id: String {
        get { storage.id }
        set { mutableStorage.id = newValue }
    }
    public var agent: String {
        get { storage.agent }
        set { mutableStorage.agent = newValue }
    }
    public var step: String {
        get { storage.step }
        set { mutableStorage.step = newValue }
    }
    public var seq: Int64 {
        get { storage.seq }
        set { mutableStorage.seq = newValue }
    }
    public var branch: Int64 {
        get { storage.branch }
        set { mutableStorage.branch = newValue }
    }
    public var attempt: Int64 {
        get { storage.attempt }
        set { mutableStorage.attempt = newValue }
    }
    public var token: Int64 {
        get { storage.token }
        set { mutableStorage.token = newValue }
    }
    public var stateJSON: [UInt8] {
        get { storage.stateJSON }
        set { mutableStorage.stateJSON = newValue }
    }
    public var inputJSON: [UInt8] {
        get { storage.inputJSON }
        set { mutableStorage.inputJSON = newValue }
    }
    public var limits: BudgetLimits {
        get { storage.limits }
        set { mutableStorage.limits = newValue }
    }
    public var usage: BudgetUsage {
        get { storage.usage }
        set { mutableStorage.usage = newValue }
    }
    /// The task's tenant has daily limits: its charges take the awaited path (checked against the tenant's
    /// counters in the store) instead of the fire-and-forget one.
    public var tenantLimited: Bool {
        get { storage.tenantLimited }
        set { mutableStorage.tenantLimited = newValue }
    }
    public var queue: String {
        get { storage.queue }
        set { mutableStorage.queue = newValue }
    }
    /// What woke the task before this step (the `wakeup` field as JSON), `""` when it did not wait.
    public var wakeupJSON: String {
        get { storage.wakeupJSON }
        set { mutableStorage.wakeupJSON = newValue }
    }
    /// When the claim happened (Unix ms, the store's clock): the lateness of a wake-up is measured to it.
    public var claimedAtMilliseconds: Int64 {
        get { storage.claimedAtMilliseconds }
        set { mutableStorage.claimedAtMilliseconds = newValue }
    }
    /// For a join step (woken by its children): child id → `{"status", "result", "error"}` JSON.
    public var childResults: [String: String] {
        get { storage.childResults }
        set { mutableStorage.childResults = newValue }
    }
    /// The decoded input and state this worker kept from the task's previous step (``StateCache``); the claim then
    /// returned neither `stateJSON` nor `inputJSON`.
    var cachedState: (any Sendable)? {
        get { storage.cachedState }
        set { mutableStorage.cachedState = newValue }
    }
    /// Run without a claim (``StepLease``): `token` is the fence of this worker's commit of the task's previous step.
    var speculative: Bool {
        get { storage.speculative }
        set { mutableStorage.speculative = newValue }
    }

    public init(
        id: String, agent: String, step: String, seq: Int64, branch: Int64, attempt: Int64, token: Int64, stateJSON: [UInt8],
        inputJSON: [UInt8],
        limits: BudgetLimits, usage: BudgetUsage, queue: String, wakeupJSON: String = "", claimedAtMilliseconds: Int64 = 0
    ) {
        storage = Storage(
            id: id, agent: agent, step: step, seq: seq, branch: branch, attempt: attempt, token: token, stateJSON: stateJSON,
            inputJSON: inputJSON, limits: limits, usage: usage, queue: queue, wakeupJSON: wakeupJSON,
            claimedAtMilliseconds: claimedAtMilliseconds)
    }
}

public enum ClaimOutcome: Sendable {
    case run(ClaimedTask)
    case missing
    case terminal(String)
    /// Already committed: the message's seq is behind the task's.
    case stale
    /// The message is ahead of the task (or on another branch/attempt): dead-letter it.
    case future(String)
    /// Another live worker holds the lease: this delivery is a duplicate.
    case leased(by: String)
    /// Paused, waiting, …: nothing to run now.
    case inactive(String)
    /// The claim itself stopped the task (cancelled, paused, budget exceeded).
    case stopped(String)
}

/// One step's effect, committed atomically.
public struct Commit: Sendable {
    public enum Kind: Sendable {
        case next(step: String)
        case handoff
        case complete(resultJSON: String)
        case fail(errorJSON: String)
        case budget(kind: String, errorJSON: String)
        case retry(delayMilliseconds: Int64, errorJSON: String, bucket: String, timer: OutboxMessage)
        case dead(reason: String, errorJSON: String, deadLetter: OutboxMessage)
        /// Commit the state, then wait or sleep: no step message, only the wait and a timer (or an
        /// immediate wake when a matching signal is already in the mailbox or the time has passed).
        case wait(WaitSpec)
        /// Commit the state, create the children (their first step messages go to this task's outbox) and
        /// wait for all of them to end, then run the join step.
        case parallel(ParallelSpec)

        /// Whether the commit writes a checkpoint and moves `seq` on (retry and dead keep the last checkpoint).
        var advances: Bool {
            switch self {
            case .retry, .dead: false
            case .next, .handoff, .complete, .fail, .budget, .wait, .parallel: true
            }
        }
    }

    public var task: String
    public var token: Int64
    public var seq: Int64
    public var kind: Kind
    /// The new checkpoint (absent for retry and dead: the attempt's state is discarded).
    public var stateJSON: String
    /// The step message for the next step (written only when the task stays queued).
    public var next: OutboxMessage?
    public var eventDataJSON: String
    /// Charges of this attempt that are in no store yet (plain charges: only the lease holder charges, and only
    /// this commit counts them); added to the attempt's pending charges. A crashed attempt's are lost with it, as
    /// its pending charges are dropped.
    public var charge = Charge()
    /// The event this worker published and the broker confirmed for the task's previous step, whose relay cursor the
    /// commit moves on too (``TaskStore/carriesSettledPublishes``; else ignored).
    public var settledEvent: InlineEvent?
    /// Set for a speculative step (run without a claim, ``StepLease``): its step name and branch, which the commit
    /// checks with the rest of what a claim checks (``token`` is then the fence of the task's previous commit).
    var speculative: (step: String, branch: Int64, limits: String)?

    public init(
        task: String, token: Int64, seq: Int64, kind: Kind, stateJSON: String, next: OutboxMessage?, eventDataJSON: String = "{}",
        charge: Charge = Charge()
    ) {
        self.charge = charge
        self.task = task
        self.token = token
        self.seq = seq
        self.kind = kind
        self.stateJSON = stateJSON
        self.next = next
        self.eventDataJSON = eventDataJSON
    }
}

public enum CommitOutcome: Sendable, Equatable {
    /// Committed; the task's new status and seq; `outboxID` names the entry to publish (if any); `event`: the
    /// commit's event for the worker to publish itself (the store's relay publishes it otherwise).
    case committed(status: String, seq: Int64, outboxID: String?, event: InlineEvent? = nil)
    /// The lease was lost (fencing token or seq no longer match): nothing was written.
    case fenced
    /// A speculative step's commit found that something happened since the worker's previous commit of the task
    /// (another claim, a budget limit, …): nothing was written; the worker claims the step, then commits again.
    case unclaimed
}

/// A commit's event that the committing worker publishes itself, right after the commit (DESIGN.md §5: events
/// leave with the outbox), instead of waiting for the relay's next round; then it moves the task's relay cursor
/// from `cursorBefore` to `streamID` with ``TaskStore/eventsPublished(_:)``. If it dies first, the relay takes
/// the task over when the commit's mark in `events_pending` comes due and publishes the event again (consumers
/// dedupe by the event's id).
public struct InlineEvent: Sendable, Hashable {
    public var task: String
    /// The event as published on `baton.events`.
    public var message: OutboxMessage
    /// The relay cursor when the commit added the event (every earlier event was published).
    public var cursorBefore: String
    /// The event's id in the task's stream.
    public var streamID: String
    /// The task has a webhook: its events are due for delivery too.
    public var webhook: Bool
    /// Earlier events of the task that the commit took over from the relay (not yet published when it ran): they
    /// go out first, in order, and the cursor moves past all of them with ``streamID``.
    public var earlier: [OutboxMessage] = []
    /// The task's last event (its commit ended it): no later commit will carry its cursor.
    public var final = false

    /// The events this publish holds.
    public var count: Int { earlier.count + 1 }

    /// The messages to publish, in order.
    public var messages: [OutboxMessage] { earlier + [message] }
}
