import Synchronization

/// Renews the leases of every step this executor runs, in one background loop (every third of the lease,
/// all renewals in flight together so the Redis connection pipelines them), and passes cancellation and
/// lease loss to the running steps. The loop exists only while steps run.
final class LeaseKeeper: Sendable {
    struct Entry: Sendable {
        var task: String
        var lease: StepLease
        var signals: StepSignals
    }
    private struct State {
        var entries: [UInt64: Entry] = [:]
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

    /// Starts renewing `task`'s lease; returns the handle for ``release(_:)``. A speculative step's lease is claimed at
    /// its first renewal instead (``StepLease``).
    func hold(task: String, lease: StepLease, signals: StepSignals) -> UInt64 {
        let (id, start) = state.withLock { state -> (UInt64, Bool) in
            state.nextID += 1
            state.entries[state.nextID] = Entry(task: task, lease: lease, signals: signals)
            let start = !state.running
            state.running = true
            return (state.nextID, start)
        }
        if start { Task { await self.loop() } }
        return id
    }

    func release(_ id: UInt64) {
        _ = state.withLock { $0.entries.removeValue(forKey: id) }
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
