import Synchronization

/// Renews the leases of every step this executor runs, in one background loop (every third of the lease,
/// all renewals in flight together so the Redis connection pipelines them), and passes cancellation and
/// lease loss to the running steps. The loop exists only while steps run.
final class LeaseKeeper: Sendable {
    struct Entry: Sendable {
        var task: String
        var seq: Int64
        var branch: Int64
        var lease: StepLease
        var signals: StepSignals
    }
    private struct State {
        var entries: [UInt64: Entry] = [:]
        /// How many entries each task has (a task runs one step at a time; a stale copy may briefly add one).
        var tasks: [String: Int] = [:]
        var nextID: UInt64 = 0
        var running = false
    }
    private let state = Mutex(State())
    let store: any TaskStore
    let workerID: String
    let settings: ProtocolSettings
    let drain: StepSignals

    init(store: any TaskStore, workerID: String, settings: ProtocolSettings, drain: StepSignals) {
        self.store = store
        self.workerID = workerID
        self.settings = settings
        self.drain = drain
    }

    /// Starts renewing the lease of `task`'s step at `seq` and `branch`; returns the handle for ``release(_:)``. A
    /// speculative step's lease is claimed at its first renewal instead (``StepLease``).
    func hold(task: String, seq: Int64, branch: Int64, lease: StepLease, signals: StepSignals) -> UInt64 {
        let (id, start) = state.withLock { state -> (UInt64, Bool) in
            state.nextID += 1
            state.entries[state.nextID] = Entry(task: task, seq: seq, branch: branch, lease: lease, signals: signals)
            state.tasks[task, default: 0] += 1
            let start = !state.running
            state.running = true
            return (state.nextID, start)
        }
        if start { Task { await self.loop() } }
        return id
    }

    func release(_ id: UInt64) {
        state.withLock { state in
            guard let entry = state.entries.removeValue(forKey: id) else { return }
            if let count = state.tasks[entry.task], count > 1 {
                state.tasks[entry.task] = count - 1
            } else {
                state.tasks[entry.task] = nil
            }
        }
    }

    /// True while this worker runs `task`'s step at `seq` and `branch` (any seq and branch when nil): its code is between
    /// its start and its return. This worker knows that better than its lease in Redis does, which lapses when the whole
    /// process stalls past it (CPU starvation, a long GC pause, SIGSTOP).
    func isRunning(task: String, seq: Int64? = nil, branch: Int64? = nil) -> Bool {
        state.withLock { state in
            guard state.tasks[task] != nil else { return false }
            return state.entries.values.contains {
                $0.task == task && (seq == nil || $0.seq == seq) && (branch == nil || $0.branch == branch)
            }
        }
    }

    private func loop() async {
        let interval = settings.lease / 3
        while true {
            try? await Task.sleep(for: interval)
            let entries = state.withLock { state -> [Entry]? in
                if state.entries.isEmpty {
                    state.running = false
                    return nil
                }
                return Array(state.entries.values)
            }
            guard let entries else { return }
            let draining = drain.draining
            await withTaskGroup(of: Void.self) { group in
                for entry in entries {
                    if draining { entry.signals.markDraining() }
                    group.addTask {
                        if entry.lease.isSpeculative {
                            // A step running longer than a third of the lease claims it now (and is renewed from then on).
                            if await entry.lease.claimed() == nil { entry.signals.markLeaseLost() }
                            return
                        }
                        do {
                            switch try await self.store.renewLease(
                                task: entry.task, token: entry.lease.token, worker: self.workerID,
                                leaseMilliseconds: self.settings.leaseMilliseconds)
                            {
                            case .held(let cancel, _): if cancel { entry.signals.markCancelled() }
                            case .lost: entry.signals.markLeaseLost()
                            }
                        } catch {
                            // Redis unreachable: try again next round; the lease may expire meanwhile and the
                            // commit is then refused by its fencing token.
                        }
                    }
                }
            }
        }
    }
}
