import Baton
import Synchronization

/// The in-memory ``MessageBus``: every published message is confirmed at once and kept, by exchange and
/// routing key, until the test (or ``BatonTestHarness``) takes it.
///
/// It models a broker that never refuses a publish. It does not model routing failures (an unbound
/// routing key is simply kept under its key), queue length limits, or the quorum queue's delivery limit.
public final class InMemoryBus: MessageBus {
    private let messages = Mutex<[OutboxMessage]>([])

    public init() {}

    public func publish(_ messages: [OutboxMessage]) async -> [(any Error)?] {
        self.messages.withLock { $0.append(contentsOf: messages) }
        return messages.map { _ in nil }
    }

    /// Everything published and not yet taken, in publish order.
    public var published: [OutboxMessage] { messages.withLock { $0 } }

    /// What was published to `exchange` (and, if given, with `routingKey`), in publish order.
    public func published(exchange: String, routingKey: String? = nil) -> [OutboxMessage] {
        messages.withLock { all in
            all.filter { $0.exchange == exchange && (routingKey == nil || $0.routingKey == routingKey) }
        }
    }

    /// Removes and returns everything published so far, in publish order.
    public func takeAll() -> [OutboxMessage] {
        messages.withLock { all in
            defer { all.removeAll() }
            return all
        }
    }
}
