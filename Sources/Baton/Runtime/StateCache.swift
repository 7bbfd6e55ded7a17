import Synchronization

/// The last state this worker committed for each of its recent tasks, decoded ("sticky state", like Temporal's
/// sticky cache). When the same worker claims the task's next step, the claim skips reading the checkpoint and the
/// input back from Redis and the step skips decoding them.
///
/// An entry names the `seq` and `branch` it was committed at, and is used only for a claim of exactly that seq and
/// branch: a checkpoint is never rewritten at the same seq and branch (redrive and fork start a new branch, and only
/// a redrive changes the input), so a hit is what Redis holds. An entry is taken out when used; a step that fails,
/// retries or is fenced puts nothing back, so its next claim reads Redis.
///
/// The cached value is the state the step left, which equals the committed checkpoint decoded only if the agent's
/// `State` survives a JSON round trip. That is already a rule of the protocol (any step may run on another
/// worker); `BatonTesting`'s in-memory backend runs without this cache, so its tests catch a `State` that breaks it.
final class StateCache: Sendable {
    struct Entry: Sendable {
        var seq: Int64
        var branch: Int64
        var agent: String
        var value: any Sendable
        /// What this worker knows of the task after its commit, for running the next step speculatively.
        var basis: SpeculationBasis?
        /// Put by a submit (the task's first state), not by a commit.
        var fromSubmit = false
    }

    let capacity: Int
    private let entries = Mutex(Entries())
    private let hitCount = Mutex(0)

    /// The entries, and the tasks of those a submit put (``put(task:seq:branch:agent:value:basis:evicting:)`` with
    /// `evicting` false), oldest first: with several workers a task's first step often runs on another one, so these
    /// go stale, and they are the first to make room.
    private struct Entries {
        var byTask: [String: Entry] = [:]
        var submitted: [String] = []
        var submittedHead = 0

        /// Notes a submit's entry; at most `capacity` are remembered (an older one, taken or not, drops out of the
        /// queue: it can no longer be the first to go, only an arbitrary victim), so the queue stays bounded.
        mutating func noteSubmitted(_ task: String, capacity: Int) {
            submitted.append(task)
            if submitted.count - submittedHead > capacity { dropOldest() }
        }

        /// Removes the oldest entry a submit put that is still here unchanged; false when there is none.
        mutating func evictSubmitted() -> Bool {
            while submittedHead < submitted.count {
                let task = submitted[submittedHead]
                dropOldest()
                if let entry = byTask[task], entry.fromSubmit {
                    byTask.removeValue(forKey: task)
                    return true
                }
            }
            return false
        }

        private mutating func dropOldest() {
            submittedHead += 1
            if submittedHead >= 1024, submittedHead * 2 >= submitted.count {
                submitted.removeFirst(submittedHead)
                submittedHead = 0
            }
        }
    }

    init(capacity: Int) { self.capacity = capacity }

    /// Takes out the state committed for `task` at `seq` on `branch` by agent `agent`, or nil.
    func take(task: String, seq: Int64, branch: Int64, agent: String) -> (any Sendable)? {
        takeEntry(task: task, seq: seq, branch: branch, agent: agent)?.value
    }

    /// Takes out the entry committed for `task` at `seq` on `branch` by agent `agent`, or nil.
    func takeEntry(task: String, seq: Int64, branch: Int64, agent: String) -> Entry? {
        guard capacity > 0 else { return nil }
        return entries.withLock { entries in
            guard let entry = entries.byTask.removeValue(forKey: task) else { return nil }
            guard entry.seq == seq, entry.branch == branch, entry.agent == agent else { return nil }
            hitCount.withLock { $0 += 1 }
            return entry
        }
    }

    /// Claims that found their state here.
    var hits: Int { hitCount.withLock { $0 } }

    /// Remembers the state committed for `task` at `seq` on `branch`. When full, the oldest entry a submit put makes
    /// room, else an arbitrary one. With `evicting` false (a submit's first state) nothing is kept when full.
    func put(
        task: String, seq: Int64, branch: Int64, agent: String, value: any Sendable, basis: SpeculationBasis? = nil, evicting: Bool = true
    ) {
        guard capacity > 0 else { return }
        entries.withLock { entries in
            if entries.byTask.count >= capacity, entries.byTask[task] == nil {
                guard evicting else { return }
                if !entries.evictSubmitted(), let victim = entries.byTask.first?.key { entries.byTask.removeValue(forKey: victim) }
            }
            var entry = Entry(seq: seq, branch: branch, agent: agent, value: value, basis: basis)
            if !evicting {
                entry.fromSubmit = true
                entries.noteSubmitted(task, capacity: capacity)
            }
            entries.byTask[task] = entry
        }
    }

    var count: Int { entries.withLock { $0.byTask.count } }
}

/// An agent's decoded input and state after a committed step: what ``StateCache`` keeps.
struct StickyState<Input: Sendable, State: Sendable>: Sendable {
    var input: Input
    var state: State
}

/// What a worker knows of a task right after its own commit queued the next step, enough to run that step without a
/// claim (``StepLease``): the fence its commit held, the task's limits and its counters after the commit. Kept only
/// when those counters are exact (the step charged nothing through the store) and no one else's counters bear on the
/// task (no tenant limits, not a child task).
struct SpeculationBasis: Sendable {
    var token: Int64
    var limits: BudgetLimits
    var usage: BudgetUsage

    /// A limit the counters already reach (the claim would stop or park the task), or a deadline within a second.
    func reachesLimit(nowMilliseconds: Int64) -> Bool {
        if let max = limits.maxSteps, usage.steps >= max { return true }
        if let max = limits.maxCostMicros, usage.costMicros >= max { return true }
        if let max = limits.maxTokens, usage.tokens >= max { return true }
        if let max = limits.maxToolCalls, usage.toolCalls >= max { return true }
        if let deadline = limits.deadlineMilliseconds, nowMilliseconds + 1000 >= deadline { return true }
        return false
    }
}

/// Counts of speculative steps (``StepLease``) of one executor, and of the process (``process``, which `baton bench`
/// prints).
final class SpeculationCounters: Sendable {
    private let counts = Mutex((started: 0, claimedLate: 0, refused: 0))
    private let parent: SpeculationCounters?

    init(parent: SpeculationCounters? = SpeculationCounters.process) { self.parent = parent }

    /// Every executor's counts in this process.
    static let process = SpeculationCounters(parent: nil)

    func started() {
        counts.withLock { $0.started += 1 }
        parent?.started()
    }
    func claimedLate() {
        counts.withLock { $0.claimedLate += 1 }
        parent?.claimedLate()
    }
    func refused() {
        counts.withLock { $0.refused += 1 }
        parent?.refused()
    }

    /// Steps run speculatively; of those, claimed late (a store call, a renewal, an outcome or commit that needed the
    /// claim); and those whose late claim did not give the step to this worker.
    var snapshot: (started: Int, claimedLate: Int, refused: Int) { counts.withLock { $0 } }
}
