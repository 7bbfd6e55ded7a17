import Logging

/// Publishing a task's outbox: every entry with confirms, then removed from Redis. What fails stays for the
/// outbox sweep (duplicates are harmless: the step protocol dedupes by seq).
public enum Outbox {
    public static func flush(task: String, store: any TaskStore, bus: any MessageBus, logger: Logger) async {
        do {
            let pending = try await store.pendingOutbox(task: task)
            guard !pending.isEmpty else { return }
            let entries = pending.sorted { $0.key < $1.key }
            let results = await bus.publish(entries.map(\.value))
            let done = zip(entries, results).filter { $0.1 == nil }.map(\.0.key)
            try await store.outboxDone(task: task, ids: done)
        } catch {
            logger.warning("outbox not flushed; the outbox sweep retries it", metadata: ["task.id": "\(task)", "error": "\(error)"])
        }
    }
}
