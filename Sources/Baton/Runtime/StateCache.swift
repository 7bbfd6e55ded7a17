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
    }

    let capacity: Int
    private let entries = Mutex<[String: Entry]>([:])
    private let hitCount = Mutex(0)

    init(capacity: Int) { self.capacity = capacity }

    /// Takes out the state committed for `task` at `seq` on `branch` by agent `agent`, or nil.
    func take(task: String, seq: Int64, branch: Int64, agent: String) -> (any Sendable)? {
        guard capacity > 0 else { return nil }
        return entries.withLock { entries in
            guard let entry = entries.removeValue(forKey: task) else { return nil }
            guard entry.seq == seq, entry.branch == branch, entry.agent == agent else { return nil }
            hitCount.withLock { $0 += 1 }
            return entry.value
        }
    }

    /// Claims that found their state here.
    var hits: Int { hitCount.withLock { $0 } }

    /// Remembers the state committed for `task` at `seq` on `branch`; when full, an arbitrary entry makes room.
    func put(task: String, seq: Int64, branch: Int64, agent: String, value: any Sendable) {
        guard capacity > 0 else { return }
        entries.withLock { entries in
            if entries.count >= capacity, entries[task] == nil, let victim = entries.first?.key { entries.removeValue(forKey: victim) }
            entries[task] = Entry(seq: seq, branch: branch, agent: agent, value: value)
        }
    }

    var count: Int { entries.withLock { $0.count } }
}

/// An agent's decoded input and state after a committed step: what ``StateCache`` keeps.
struct StickyState<Input: Sendable, State: Sendable>: Sendable {
    var input: Input
    var state: State
}
