import Synchronization

/// What a task's store must learn after the broker confirmed this worker's publishes: the outbox entries to
/// remove and the published event whose relay cursor moves on (``TaskStore/eventsPublished(_:)``).
///
/// Both are bookkeeping, safe to do late: an outbox entry left behind is republished by the outbox sweep (the
/// step's seq check acks the copy), and an event whose cursor did not move is published again by the relay when
/// its lease in `events_pending` ends (consumers dedupe by the event's id). So instead of a Redis call of its own
/// per hop, each is carried by the **next commit of the same task** when that comes soon — with one worker on a
/// chain, nearly always: the claim of step n+1 follows the confirm of its message (``Commit/settled``). What no
/// commit took within ``delay`` is sent on its own, as before. A store that cannot carry them
/// (``TaskStore/carriesSettledPublishes`` is false, the in-memory one) gets them at once.
final class SettledPublishes: Sendable {
    struct Entry: Sendable {
        var event: InlineEvent?
        var outboxIDs: [String] = []
        var since: ContinuousClock.Instant
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var flushing = false
    }

    let store: any TaskStore
    /// How long an entry waits for a commit of its task before it is sent on its own. Longer than a hop takes
    /// under load (200 chains in flight: ~50–100 ms per hop, Little's law), far shorter than the outbox sweep's
    /// age (an outbox entry is republished only when older than seconds). The cost: when a task's next step runs
    /// on another worker, its event waits for this worker's flush, then goes through the relay (~this much later).
    let delay: Duration
    private let state = Mutex(State())

    init(store: any TaskStore, delay: Duration = .milliseconds(250)) {
        self.store = store
        self.delay = delay
    }

    /// The broker confirmed `event`'s publish.
    func eventPublished(_ event: InlineEvent) {
        guard store.carriesSettledPublishes else {
            let store = self.store
            Task { await store.eventsPublished([event]) }
            return
        }
        add(task: event.task) { entry in
            if let earlier = entry.event, earlier.streamID != event.streamID {
                // Two events of the task wait (rare): the earlier goes alone now, so the cursor's
                // compare-and-set sees them in order.
                let store = self.store
                Task { await store.eventsPublished([earlier]) }
            }
            entry.event = event
        }
    }

    /// The broker confirmed the publish of the message in outbox entry `id` of `task`.
    func outboxPublished(task: String, id: String) {
        guard store.carriesSettledPublishes else {
            store.outboxDoneWithoutWaiting(task: task, ids: [id])
            return
        }
        add(task: task) { $0.outboxIDs.append(id) }
    }

    /// Takes what waits for `task`, for its commit to carry.
    func take(task: String) -> Commit.Settled {
        guard let entry = state.withLock({ $0.entries.removeValue(forKey: task) }) else { return Commit.Settled() }
        return Commit.Settled(outboxIDs: entry.outboxIDs, event: entry.event)
    }

    /// Sends what a commit carried on its own (the commit was refused or failed: it wrote nothing).
    func send(_ settled: Commit.Settled, task: String) async {
        if !settled.outboxIDs.isEmpty { store.outboxDoneWithoutWaiting(task: task, ids: settled.outboxIDs) }
        if let event = settled.event { await store.eventsPublished([event]) }
    }

    /// Entries waiting for a commit.
    var count: Int { state.withLock { $0.entries.count } }

    private func add(task: String, _ update: (inout Entry) -> Void) {
        let start = state.withLock { state in
            var entry = state.entries[task] ?? Entry(since: .now)
            update(&entry)
            state.entries[task] = entry
            if state.flushing { return false }
            state.flushing = true
            return true
        }
        if start { Task { await flushLoop() } }
    }

    /// Sends what waited ``delay`` without a commit; runs while entries wait.
    private func flushLoop() async {
        while true {
            try? await Task.sleep(for: delay)
            let (due, last): ([(String, Entry)], Bool) = state.withLock { state in
                let now = ContinuousClock.now
                let due = state.entries.filter { now - $0.value.since >= delay }
                for (task, _) in due { state.entries.removeValue(forKey: task) }
                // The loop ends with the last entry; the next `add` starts another.
                if state.entries.isEmpty { state.flushing = false }
                return (Array(due), !state.flushing)
            }
            let events = due.compactMap(\.1.event)
            for (task, entry) in due where !entry.outboxIDs.isEmpty { store.outboxDoneWithoutWaiting(task: task, ids: entry.outboxIDs) }
            if !events.isEmpty { await store.eventsPublished(events) }
            if last { return }
        }
    }
}
