import Synchronization

/// The events this worker published for its tasks' steps whose relay cursor has yet to move past them
/// (``TaskStore/eventsPublished(_:)``).
///
/// Moving the cursor is bookkeeping that may come late: an event whose cursor did not move is published again by the
/// relay when its lease in `events_pending` ends (consumers dedupe by the event's id). So instead of a script of its
/// own per hop, it is carried by the **next commit of the same task** when that comes soon — with one worker on a
/// chain, nearly always: the claim of step n+1 follows the confirm of step n's publishes (``Commit/settledEvent``). What no
/// commit took within ``delay`` is sent on its own, as before. A store that cannot carry it
/// (``TaskStore/carriesSettledPublishes`` is false, the in-memory one) gets it at once.
///
/// (Outbox entries are not deferred so: `baton verify` holds that nothing is left in an outbox once a run settled,
/// and a task's last confirmed message has no next commit to carry its removal.)
final class SettledPublishes: Sendable {
    /// A class: the dictionary's reads, filter and removals copy one reference, not the event's dozen (an
    /// `InlineEvent` holds ~12 strings and arrays, each retained and released on a copy; with the entry a struct, this
    /// file made ~1/5 of the worker's retains on the step chain, perf uprobes, twentieth session).
    private final class Entry: Sendable {
        let event: InlineEvent
        let since: ContinuousClock.Instant

        init(event: InlineEvent, since: ContinuousClock.Instant) {
            self.event = event
            self.since = since
        }
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var flushing = false
    }

    let store: any TaskStore
    /// How long an event waits for a commit of its task before its cursor moves on its own. Longer than a hop takes
    /// under load (200 chains in flight: ~50–100 ms per hop, Little's law), far shorter than the relay's 10 s lease.
    /// The cost: when a task's next step runs on another worker, that step's event goes through the relay, about
    /// this much later.
    let delay: Duration
    private let state = Mutex(State())

    init(store: any TaskStore, delay: Duration = .milliseconds(250)) {
        self.store = store
        self.delay = delay
    }

    /// The broker confirmed these events' publishes. A task's last event (``InlineEvent/final``) has no next commit to
    /// wait for: its cursor moves at once, the batch's in one round trip.
    func eventsPublished(_ events: [InlineEvent]) {
        let finals = events.filter(\.final)
        if !finals.isEmpty {
            let store = self.store
            Task { await store.eventsPublished(finals) }
        }
        for event in events where !event.final { eventPublished(event) }
    }

    /// The broker confirmed `event`'s publish.
    func eventPublished(_ event: InlineEvent) {
        guard store.carriesSettledPublishes else {
            let store = self.store
            Task { await store.eventsPublished([event]) }
            return
        }
        let (start, earlier) = state.withLock { state -> (Bool, InlineEvent?) in
            let earlier = state.entries.updateValue(Entry(event: event, since: .now), forKey: event.task)?.event
            if state.flushing { return (false, earlier) }
            state.flushing = true
            return (true, earlier)
        }
        if let earlier, earlier.streamID != event.streamID {
            // Two events of the task waited (rare): the earlier goes alone now, so the cursor's compare-and-set sees
            // them in order.
            let store = self.store
            Task { await store.eventsPublished([earlier]) }
        }
        if start { Task { await flushLoop() } }
    }

    /// Takes the event that waits for `task`, for its commit to carry.
    func take(task: String) -> InlineEvent? {
        state.withLock { $0.entries.removeValue(forKey: task) }?.event
    }

    /// Moves the cursor of an event a commit carried on its own (the commit was refused or failed: it wrote nothing).
    func send(_ event: InlineEvent?) async {
        if let event { await store.eventsPublished([event]) }
    }

    /// Sends what waited ``delay`` without a commit; runs while events wait.
    private func flushLoop() async {
        while true {
            try? await Task.sleep(for: delay)
            let (due, last): ([InlineEvent], Bool) = state.withLock { state in
                let now = ContinuousClock.now
                var due: [InlineEvent] = []
                var dueTasks: [String] = []
                for (task, entry) in state.entries where now - entry.since >= delay {
                    dueTasks.append(task)
                    due.append(entry.event)
                }
                for task in dueTasks { state.entries.removeValue(forKey: task) }
                // The loop ends with the last entry; the next event starts another.
                if state.entries.isEmpty { state.flushing = false }
                return (due, !state.flushing)
            }
            if !due.isEmpty { await store.eventsPublished(due) }
            if last { return }
        }
    }
}
