import AMQPClient
import Logging

/// Publishing a task's outbox: every entry with confirms, then removed from Redis. What fails stays for the
/// outbox sweep (duplicates are harmless: the step protocol dedupes by seq).
public enum Outbox {
    /// An entry a flush left in the outbox, and why.
    public struct Leftover: Sendable {
        public var id: String
        public var message: OutboxMessage
        public var error: any Error
        /// RabbitMQ answered that no queue takes the message (a `mandatory` publish came back as `basic.return`): the
        /// broker is up and the queue is missing, which a retry seconds later will not change.
        public var unroutable: Bool { Outbox.isUnroutable(error) }
    }

    /// True when RabbitMQ returned a `mandatory` message because no queue is bound for it.
    public static func isUnroutable(_ error: (any Error)?) -> Bool { (error as? AMQPError)?.code == .unroutable }

    /// What a submitter is told when its task's first step found no queue (the task is created and waits in its outbox).
    static func noQueueWarning(_ queue: String) -> String {
        "RabbitMQ has no step queue '\(queue)' yet: the task waits in its outbox until a worker consumes that queue "
            + "(`baton worker --queues \(queue)`)"
    }

    /// Publishes what `task`'s outbox holds and removes what the broker confirmed; returns what stayed (empty too when
    /// Redis failed: that is logged, and the sweep retries it).
    @discardableResult
    public static func flush(task: String, store: any TaskStore, bus: any MessageBus, logger: Logger) async -> [Leftover] {
        do {
            let pending = try await store.pendingOutbox(task: task)
            guard !pending.isEmpty else { return [] }
            let entries = pending.sorted { $0.key < $1.key }
            let results = await bus.publish(entries.map(\.value))
            var done: [String] = []
            var left: [Leftover] = []
            for (entry, result) in zip(entries, results) {
                if let result {
                    left.append(Leftover(id: entry.key, message: entry.value, error: result))
                } else {
                    done.append(entry.key)
                }
            }
            try await store.outboxDone(task: task, ids: done)
            return left
        } catch {
            logger.warning("outbox not flushed; the outbox sweep retries it", metadata: ["task.id": "\(task)", "error": "\(error)"])
            return []
        }
    }
}
