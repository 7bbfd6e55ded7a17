import Foundation
import RedisClient
import Synchronization

/// The production ``TaskStore``: every protocol step is one Lua script on Redis.
public struct RedisTaskStore: TaskStore {
    public struct Settings: Sendable {
        public var keys = RedisKeys()
        /// Events kept per task (`XADD MAXLEN ~`).
        public var eventsMaxLength = 1000
        /// Checkpoint versions kept per task.
        public var checkpointsKept = 5
        /// A lease whose holder has not sent a heartbeat for this long is treated as expired.
        public var workerStaleMilliseconds: Int64 = 10_000
        /// Claims of one step without a commit after which the step is dead-lettered as poison
        /// (`delivery_limit`): its workers keep dying while running it.
        public var maxClaimsPerStep = 10
        /// Unconsumed signals kept per task; one more is refused (``SignalOutcome/mailboxFull(cap:)``).
        public var signalMailboxCap = SignalLimits.mailboxCap
        /// Daily limits per tenant (`tenants.<name>.*`).
        public var tenantBudgets = TenantBudgets()
        public init() {}
    }

    public let redis: RedisConnection
    public let settings: Settings
    var keys: RedisKeys { settings.keys }

    static let submitScript = RedisScript(Scripts.submit)
    static let claimScript = RedisScript(Scripts.claim)
    static let renewScript = RedisScript(Scripts.renew)
    static let chargeScript = RedisScript(Scripts.charge)
    static let progressScript = RedisScript(Scripts.progress)
    static let commitScript = RedisScript(Scripts.commit)
    static let outboxDoneScript = RedisScript(Scripts.outboxDone)
    static let claimTimersScript = RedisScript(Scripts.claimTimers)
    static let claimOutboxScript = RedisScript(Scripts.claimOutbox)
    static let controlScript = RedisScript(Scripts.control)
    static let signalScript = RedisScript(Scripts.signal)
    static let fireWaitTimerScript = RedisScript(Scripts.fireWaitTimer)
    static let raiseScript = RedisScript(Scripts.raise)
    static let claimPrewarmScript = RedisScript(Scripts.claimPrewarm)
    static let prewarnScript = RedisScript(Scripts.prewarn)

    public init(redis: RedisConnection, settings: Settings = Settings()) {
        self.redis = redis
        self.settings = settings
    }

    /// A new outbox entry id: unique across processes (a random 64-bit prefix drawn once per process) and within
    /// one (a counter), without a random draw (a `getrandom` call) per commit.
    static func outboxID() -> String { outboxIDPrefix + String(outboxIDCounter.wrappingAdd(1, ordering: .relaxed).newValue, radix: 16) }
    static let outboxIDPrefix = TaskID.hex(UInt64.random(in: 0...UInt64.max), width: 16) + "-"
    static let outboxIDCounter = Atomic<UInt64>(0)

    /// The start of a tenant's day-counter keys (`baton:tenant:`; the scripts add `{name}:yyyy-mm-dd`).
    var tenantKeyPrefix: String { keys.prefix + "tenant:" }

    /// The key of `tenant`'s counters for the UTC day of `date`.
    public func tenantDayKey(_ tenant: String, day date: Date) -> String { tenantKeyPrefix + "{\(tenant)}:" + TenantBudgets.day(date) }

    public func submit(_ task: NewTask) async throws -> SubmitOutcome {
        let bucket = keys.bucket(of: task.id)
        let outbox = OutboxMessage.step(task.firstMessage, queue: task.queue).jsonText
        if let run = Self.runLabel(task.labelsJSON) {
            // Indexed before the task exists (another slot, so not in the script): the index may name a task whose
            // submit failed (verify reports it missing), never miss one that exists.
            _ = try await redis.send("SADD", keys.run(run), task.id)
        }
        var args: [any RedisArgumentConvertible] = [
            task.id, task.agent, task.inputJSON, task.stateJSON, task.firstStep, task.tenant, task.labelsJSON, task.notifyJSON,
            task.outboxID ?? Self.outboxID(), outbox, settings.eventsMaxLength, task.queue, RedisKeys.root(of: task.id), task.parent,
        ]
        for (name, value) in task.limits.fields {
            args.append(name)
            args.append(value)
        }
        let reply = try await redis.evalSHA(
            Self.submitScript,
            keys: [
                keys.task(task.id), keys.budget(task.id), keys.checkpointPrefix(task.id), keys.events(task.id), keys.outbox(task.id),
                keys.indexPrefix(bucket: bucket), keys.outboxIndex(bucket: bucket), keys.eventsPending(bucket: bucket),
            ], args: args)
        let parts = reply.array ?? []
        if parts.first?.string == "exists" { return .exists(status: parts.dropFirst().first?.string ?? "") }
        return .created
    }

    /// The `run` label of a task's labels JSON (verification runs), if any.
    static func runLabel(_ labelsJSON: String) -> String? {
        guard labelsJSON.contains("\"run\""), let labels = try? JSONValue.parse(Array(labelsJSON.utf8)),
            let run = labels["run"]?.stringValue, !run.isEmpty
        else { return nil }
        return run
    }

    public func claim(_ message: StepMessage, worker: String, leaseMilliseconds: Int64) async throws -> ClaimOutcome {
        try claimOutcome(try await redis.pipeline(claimCommands(message, worker: worker, leaseMilliseconds: leaseMilliseconds)), message)
    }

    /// Claims several steps in one round trip (a batch of deliveries): one script call each, pipelined.
    public func claimAll(_ messages: [StepMessage], worker: String, leaseMilliseconds: Int64, stateCached: [Bool]) async -> [Result<
        ClaimOutcome, any Error
    >] {
        var commands: [RedisCommand] = []
        var ranges: [Range<Int>] = []
        for (index, message) in messages.enumerated() {
            let cached = index < stateCached.count && stateCached[index]
            let claim = claimCommands(message, worker: worker, leaseMilliseconds: leaseMilliseconds, stateCached: cached)
            ranges.append(commands.count..<commands.count + claim.count)
            commands.append(contentsOf: claim)
        }
        let replies: [RedisReply]
        do {
            replies = try await redis.pipeline(commands)
        } catch {
            return messages.map { _ in .failure(error) }
        }
        return zip(messages, ranges).map { message, range in
            Result {
                guard range.upperBound <= replies.count else { throw BatonError(.internalError, "no reply to a claim") }
                return try claimOutcome(Array(replies[range]), message)
            }
        }
    }

    /// The claim script and, unless the worker holds the state (`stateCached`), a `GET` of the step's checkpoint and an
    /// `HGET` of the task's input right behind it: the checkpoint of the seq a claim runs is written once and outlives
    /// the lease the claim takes, the input never changes under a lease, and plain reads spare Redis's Lua a copy and a
    /// hash of every byte of both.
    func claimCommands(_ message: StepMessage, worker: String, leaseMilliseconds: Int64, stateCached: Bool = false) -> [RedisCommand] {
        let script = claimCommand(message, worker: worker, leaseMilliseconds: leaseMilliseconds)
        if stateCached { return [script] }
        return [
            script, RedisCommand("GET", keys.checkpoint(message.task, seq: message.seq)),
            RedisCommand("HGET", keys.task(message.task), "input"),
        ]
    }

    func claimCommand(_ message: StepMessage, worker: String, leaseMilliseconds: Int64) -> RedisCommand {
        let id = message.task
        let task = keys.of(id)
        let bucket = keys.bucket(of: id)
        return .evalSHA(
            Self.claimScript,
            keys: [
                task.task, task.budget, task.checkpointPrefix, task.events, keys.indexPrefix(bucket: bucket), keys.workers, task.outbox,
                keys.outboxIndex(bucket: bucket), keys.eventsPending(bucket: bucket),
            ],
            args: [
                message.seq, message.branch, message.attempt, worker, leaseMilliseconds, id, settings.eventsMaxLength,
                settings.workerStaleMilliseconds, settings.maxClaimsPerStep, settings.tenantBudgets.json, tenantKeyPrefix,
            ])
    }

    /// The outcome of a claim from its replies: the script's, then the checkpoint's and the input's when they were read
    /// beside it.
    func claimOutcome(_ replies: [RedisReply], _ message: StepMessage) throws -> ClaimOutcome {
        guard let reply = replies.first else { throw BatonError(.internalError, "no reply to a claim") }
        if let error = reply.errorMessage { throw BatonError(.internalError, "Redis rejected the claim script: \(error)") }
        if let error = replies.dropFirst().lazy.compactMap(\.errorMessage).first {
            throw BatonError(.internalError, "Redis refused to read task \(message.task)'s checkpoint \(message.seq) or input: \(error)")
        }
        let id = message.task
        let parts = reply.array ?? []
        func part(_ i: Int) -> String { i < parts.count ? (parts[i].string ?? "") : "" }
        switch part(0) {
        case "run":
            var budget: [String: String] = [:]
            let flat = parts.count > 6 ? (parts[6].array ?? []) : []
            var index = 0
            while index + 1 < flat.count {
                budget[flat[index].string ?? ""] = flat[index + 1].string ?? ""
                index += 2
            }
            var claimed = ClaimedTask(
                id: id, agent: part(5), step: part(2), seq: message.seq, branch: message.branch, attempt: message.attempt,
                token: Int64(part(1)) ?? 0,
                stateJSON: replies.count > 1 ? (replies[1].bytes ?? []) : [], inputJSON: replies.count > 2 ? (replies[2].bytes ?? []) : [],
                limits: BudgetLimits(fields: budget),
                usage: BudgetUsage(fields: budget), queue: "", wakeupJSON: part(8), claimedAtMilliseconds: Int64(part(7)) ?? 0)
            claimed.tenantLimited = settings.tenantBudgets.hasLimits(part(9))
            return .run(claimed)
        case "missing": return .missing
        case "terminal": return .terminal(part(1))
        case "stale": return .stale
        case "future": return .future(part(1))
        case "leased": return .leased(by: part(1))
        case "inactive": return .inactive(part(1))
        case "stopped": return .stopped(part(1))
        default:
            throw BatonError(.internalError, "the claim script answered '\(part(0))'")
        }
    }

    public func renewLease(task: String, token: Int64, worker: String, leaseMilliseconds: Int64) async throws -> LeaseStatus {
        let reply = try await redis.evalSHA(
            Self.renewScript, keys: [keys.task(task), keys.workers], args: [token, worker, leaseMilliseconds])
        let parts = reply.array ?? []
        guard parts.first?.int == 1 else { return .lost }
        let cancel = parts.count > 1 ? !(parts[1].string ?? "").isEmpty : false
        let pause = parts.count > 2 ? !(parts[2].string ?? "").isEmpty : false
        return .held(cancelRequested: cancel, pauseRequested: pause)
    }

    private func chargeCall(task: String, token: Int64, charge: Charge, key: String, record: String, mode: String) async throws
        -> [RedisReply]
    {
        let reply = try await redis.evalSHA(
            Self.chargeScript, keys: [keys.task(task), keys.budget(task), keys.effects(task), keys.chargedEffects(task)],
            args: [
                token, charge.costMicros, charge.tokens, charge.toolCalls, key, record, mode, settings.tenantBudgets.json, tenantKeyPrefix,
            ])
        return reply.array ?? []
    }

    public func charge(task: String, token: Int64, _ charge: Charge) async throws -> ChargeOutcome {
        let parts = try await chargeCall(task: task, token: token, charge: charge, key: "", record: "", mode: "charge")
        switch parts.first?.string {
        case "ok":
            let over = parts.count > 1 ? (parts[1].string ?? "") : ""
            return over.isEmpty ? .ok : .exceeded(over)
        default: return .fenced
        }
    }

    private func effectLookup(_ parts: [RedisReply], fallback: EffectRecord?) throws -> EffectLookup {
        switch parts.first?.string {
        case "absent": return .absent
        case "ok":
            let over = parts.count > 1 ? (parts[1].string ?? "") : ""
            let raw = parts.count > 2 ? (parts[2].bytes ?? []) : []
            let record = raw.isEmpty ? fallback : try JSONCoding.decoder.decode(EffectRecord.self, from: Data(raw))
            guard let record else { return .absent }
            return .recorded(record, exceeded: over.isEmpty ? nil : over)
        default: return .fenced
        }
    }

    public func effect(task: String, token: Int64, key: String) async throws -> EffectLookup {
        let parts = try await chargeCall(task: task, token: token, charge: Charge(), key: key, record: "", mode: "effect_get")
        return try effectLookup(parts, fallback: nil)
    }

    public func recordEffect(task: String, token: Int64, key: String, record: EffectRecord) async throws -> EffectLookup {
        let parts = try await chargeCall(
            task: task, token: token, charge: record.charge, key: key, record: try JSONCoding.string(record), mode: "effect_put")
        return try effectLookup(parts, fallback: record)
    }

    public func progress(task: String, token: Int64, fraction: Double, message: String) async throws {
        let data = try JSONCoding.string(["fraction": JSONValue.double(fraction), "message": .string(message)])
        try await redis.evalSHA(
            Self.progressScript, keys: [keys.task(task), keys.events(task), keys.eventsPending(bucket: keys.bucket(of: task))],
            args: [token, String(fraction), message, settings.eventsMaxLength, data])
    }

    public func commit(_ commit: Commit) async throws -> CommitOutcome {
        let request = try commitRequest(commit)
        // One command: `send`, which throws Redis's error as it is; with a staged checkpoint, both in one round trip.
        let replies = request.commands.count == 1 ? [try await redis.send(request.commands[0])] : try await redis.pipeline(request.commands)
        return try commitOutcome(replies, commit, outboxID: request.outboxID)
    }

    /// Commits several steps in one round trip: one script call each (with its staged checkpoint), pipelined.
    public func commitAll(_ commits: [Commit]) async -> [Result<CommitOutcome, any Error>] {
        var commands: [RedisCommand] = []
        var requests: [(index: Int, range: Range<Int>, outboxID: String)] = []
        var results: [Result<CommitOutcome, any Error>?] = Array(repeating: nil, count: commits.count)
        for (index, commit) in commits.enumerated() {
            do {
                let request = try commitRequest(commit)
                requests.append((index, commands.count..<commands.count + request.commands.count, request.outboxID))
                commands.append(contentsOf: request.commands)
            } catch {
                results[index] = .failure(error)
            }
        }
        do {
            let replies = try await redis.pipeline(commands)
            for request in requests where request.range.upperBound <= replies.count {
                results[request.index] = Result {
                    try commitOutcome(Array(replies[request.range]), commits[request.index], outboxID: request.outboxID)
                }
            }
        } catch {
            for request in requests { results[request.index] = .failure(error) }
        }
        return results.map { $0 ?? .failure(BatonError(.internalError, "no reply to a commit")) }
    }

    /// States from this size on are staged: written by a plain `SET` in front of the commit script, which renames the
    /// key, instead of passing through the script. Redis's Lua copies every argument and hashes every byte of it, so a
    /// state that goes through the script costs Redis ~1.5 µs of CPU per KB more than one that is set. Redis CPU per
    /// commit, staged against through the script (`scripts/commit-cost`, Redis 7.0, docs/benchmarks.md, thirteenth
    /// session): 2 KB +1 %, 3–6 KB within the noise, 8 KB −15 %, 20 KB −20 %, 100 KB −39 %.
    static let stagedCheckpointBytes = 8192

    /// The commands of one commit (a staged checkpoint's `SET`, then the script) and the id of its outbox entry.
    struct CommitRequest {
        var commands: [RedisCommand]
        var outboxID: String
    }

    func commitRequest(_ commit: Commit) throws -> CommitRequest {
        let outboxID = Self.outboxID()
        let staged = commit.kind.advances && commit.stateJSON.utf8.count >= Self.stagedCheckpointBytes
        let script = try commitCommand(commit, outboxID: outboxID, staged: staged)
        guard staged else { return CommitRequest(commands: [script], outboxID: outboxID) }
        // Expires by itself if the script never runs (the connection dropped between the two).
        let set = RedisCommand("SET", stagedCheckpointKey(commit.task, outboxID: outboxID), commit.stateJSON, "PX", 600_000)
        return CommitRequest(commands: [set, script], outboxID: outboxID)
    }

    func stagedCheckpointKey(_ task: String, outboxID: String) -> String {
        keys.of(task).base + RedisKeys.TaskKeys.Suffix.stagedCheckpoint(outboxID: outboxID)
    }

    func commitCommand(_ commit: Commit, outboxID: String, staged: Bool) throws -> RedisCommand {
        let id = commit.task
        let task = keys.of(id)
        let bucket = keys.bucket(of: id)
        var kind = ""
        var detailJSON = ""
        var detail = ""
        var outbox = commit.next?.jsonText ?? ""
        var timerMember = ""
        var timerDelay: Int64 = 0
        var nextStep = ""
        var waitJSON = ""
        switch commit.kind {
        case .wait(let spec):
            kind = "wait"
            waitJSON = spec.json
        case .parallel(let spec):
            kind = "parallel"
            waitJSON = spec.json
        case .next(let step):
            kind = "next"
            nextStep = step
        case .handoff:
            kind = "handoff"
        case .complete(let result):
            kind = "complete"
            detailJSON = result
        case .fail(let error):
            kind = "fail"
            detailJSON = error
        case .budget(let budgetKind, let error):
            kind = "budget"
            detail = budgetKind
            detailJSON = error
        case .retry(let delay, let error, let bucket, let timer):
            kind = "retry"
            detailJSON = error
            detail = bucket
            timerDelay = delay
            timerMember = try JSONCoding.string(timer)
        case .dead(let reason, let error, let deadLetter):
            kind = "dead"
            detail = reason
            detailJSON = error
            outbox = deadLetter.jsonText
        }
        if case .handoff = commit.kind, nextStep.isEmpty { nextStep = "" }
        // Built argument by argument (no arrays of boxed values; the task's keys from its base without a string each):
        // one per step on the hot path.
        let base = task.base
        let state = staged ? "" : commit.stateJSON
        var command = RedisCommand.evalSHA(Self.commitScript, keyCount: 13)
        command.reserve(
            arguments: 41,
            bytes: 13 * (base.utf8.count + 24) + state.utf8.count + outbox.utf8.count + commit.eventDataJSON.utf8.count
                + detailJSON.utf8.count + waitJSON.utf8.count + 256)
        typealias Suffix = RedisKeys.TaskKeys.Suffix
        let global = keys.bucketKeys(bucket)
        command.append(base, joinedWith: Suffix.task)
        command.append(base, joinedWith: Suffix.budget)
        command.append(base, joinedWith: Suffix.checkpointPrefix)
        command.append(base, joinedWith: Suffix.events)
        command.append(base, joinedWith: Suffix.outbox)
        command.append(global.indexPrefix)
        command.append(global.outboxIndex)
        command.append(global.timers)
        command.append(base, joinedWith: Suffix.chargedEffects)
        command.append(base, joinedWith: Suffix.signals)
        command.append(global.webhooksDue)
        command.append(base, joinedWith: Suffix.stagedCheckpoint(outboxID: outboxID))
        command.append(global.eventsPending)
        command.append(commit.token)
        command.append(commit.seq)
        command.append(kind)
        command.append(state)
        command.append(nextStep)
        command.append(detailJSON)
        command.append(outboxID)
        command.append(outbox)
        command.append(timerMember)
        command.append(timerDelay)
        command.append(settings.checkpointsKept)
        command.append(settings.eventsMaxLength)
        command.append(id)
        command.append(detail)
        command.append(commit.eventDataJSON)
        command.append(waitJSON)
        command.append(commit.charge.costMicros)
        command.append(commit.charge.tokens)
        command.append(commit.charge.toolCalls)
        command.append(commit.settledEvent?.cursorBefore ?? "")
        command.append(commit.settledEvent?.streamID ?? "")
        command.append(commit.settledEvent?.webhook == true ? "1" : "0")
        command.append(commit.speculative == nil ? "0" : "1")
        command.append(commit.speculative?.step ?? "")
        command.append(commit.speculative?.branch ?? 0)
        command.append(commit.settledEvent?.count ?? 1)
        command.append(commit.speculative?.limits ?? "")
        command.append(staged ? "1" : "0")
        return command
    }

    /// The outcome of a commit from its replies (the staged checkpoint's `SET`, if any, then the script's).
    func commitOutcome(_ replies: [RedisReply], _ commit: Commit, outboxID: String) throws -> CommitOutcome {
        guard let reply = replies.last else { throw BatonError(.internalError, "no reply to a commit") }
        if replies.count > 1, let error = replies[0].errorMessage {
            throw BatonError(
                .internalError,
                "Redis refused to store task \(commit.task)'s checkpoint (\(commit.stateJSON.utf8.count) bytes): \(error); nothing was committed"
            )
        }
        if let error = reply.errorMessage { throw BatonError(.internalError, "Redis rejected the commit script: \(error)") }
        let parts = reply.array ?? []
        if parts.first?.string == "unclaimed" { return .unclaimed }
        guard parts.first?.string == "ok" else { return .fenced }
        let status = parts.count > 1 ? (parts[1].string ?? "") : ""
        let seq = parts.count > 2 ? (Int64(parts[2].string ?? "") ?? commit.seq) : commit.seq
        let wroteOutbox = status == "queued" || status == "dead_lettered"
        var event: InlineEvent?
        if parts.count > 3 {
            if case .bulkString(let packed) = parts[3] {
                event = Self.inlineEvent(task: commit.task, packed: packed, earlier: parts.count > 4 ? parts[4] : nil, status: status)
            } else {
                event = Self.inlineEvent(task: commit.task, parts[3].array ?? [], status: status)
            }
        }
        return .committed(status: status, seq: seq, outboxID: wroteOutbox ? outboxID : nil, event: event)
    }

    /// The event a commit returned for its worker to publish: stream id, cursor, then the task's fields the
    /// event's JSON needs, then the stream entry's fields (see the commit script).
    /// `status` is the task's after the commit: the status of an event whose type implies none (a `signal_received`
    /// taken over with a task's last event, say).
    static func inlineEvent(task: String, _ parts: [RedisReply], status: String = "queued") -> InlineEvent? {
        guard parts.count >= 14 else { return nil }
        return inlineEvent(
            task: task, fields: parts[..<14].map { $0.string ?? "" }, earlier: parts.count > 14 ? parts[14] : nil, status: status)
    }

    /// The same event from its fourteen fields joined by NUL bytes (the commit packs them so when none holds one), and
    /// the events taken over as their own part.
    static func inlineEvent(task: String, packed: [UInt8], earlier: RedisReply?, status: String = "queued") -> InlineEvent? {
        var fields: [String] = []
        fields.reserveCapacity(14)
        packed.withUnsafeBufferPointer { bytes in
            var start = 0
            for index in bytes.indices where bytes[index] == 0 {
                fields.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
                start = index + 1
            }
            fields.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start...]), as: UTF8.self))
        }
        guard fields.count == 14 else { return nil }
        return inlineEvent(task: task, fields: fields, earlier: earlier, status: status)
    }

    private static func inlineEvent(task: String, fields: [String], earlier: RedisReply?, status: String) -> InlineEvent {
        func part(_ i: Int) -> String { fields[i] }
        // The relay's shapes: the task's fields as `eventsRead` returns them, and the stream entry.
        let info = EventTaskInfo(
            id: task, agent: part(2), status: status, notifyJSON: part(3), progressFraction: part(4), progressMessage: part(5),
            costMicros: part(6), tokens: part(7))
        let event = StreamEvent(
            streamID: part(0), type: part(8), seq: Int64(part(9)) ?? 0, branch: Int64(part(10)) ?? 0, step: part(11),
            atMilliseconds: Int64(part(12)) ?? 0, dataJSON: part(13))
        // Events the commit took over from the relay (published first, in order).
        let taken = StreamEvent.entries(earlier).map { EventMessage.outbox(task: info, $0) }
        return InlineEvent(
            task: task, message: EventMessage.outbox(task: info, event), cursorBefore: part(1), streamID: part(0),
            webhook: info.webhookURL != nil, earlier: taken, final: TaskView.terminalStatuses.contains(event.type))
    }

    public var carriesSettledPublishes: Bool { true }

    public var supportsSpeculativeSteps: Bool { true }

    public func eventsPublished(_ events: [InlineEvent]) async {
        guard !events.isEmpty else { return }
        _ = try? await redis.pipeline(
            events.map { event in
                let task = keys.of(event.task)
                let bucket = keys.bucket(of: event.task)
                return .evalSHA(
                    EventRelay.advanceScript,
                    keys: [task.task, task.events, keys.eventsPending(bucket: bucket), keys.webhooksDue(bucket: bucket)],
                    args: [event.task, event.cursorBefore, event.streamID, event.count, event.webhook ? "1" : "0"])
            })
    }

    /// Removes published outbox entries with a plain `HDEL` (one cheap command on the hot path); the
    /// outbox sweep drops the task from the outbox index once its outbox is empty.
    public func outboxDone(task: String, ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        try await redis.send(RedisCommand("HDEL", arguments: [keys.outbox(task)] + ids.map { $0 as any RedisArgumentConvertible }))
    }

    public func outboxDoneWithoutWaiting(task: String, ids: [String]) {
        guard !ids.isEmpty else { return }
        redis.sendDetached([RedisCommand("HDEL", arguments: [keys.outbox(task)] + ids.map { $0 as any RedisArgumentConvertible })])
    }

    public func childResults(task: String) async throws -> [String: String] {
        TaskQueries.hash(try await redis.send("HGETALL", keys.of(task).children))
    }

    public func pendingOutbox(task: String) async throws -> [String: OutboxMessage] {
        let reply = try await redis.send("HGETALL", keys.outbox(task))
        let flat = reply.array ?? []
        var out: [String: OutboxMessage] = [:]
        var index = 0
        while index + 1 < flat.count {
            if let id = flat[index].string, let bytes = flat[index + 1].bytes,
                let message = try? JSONCoding.decoder.decode(OutboxMessage.self, from: Data(bytes))
            {
                out[id] = message
            }
            index += 2
        }
        return out
    }
}
