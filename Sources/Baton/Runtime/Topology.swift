/// Names of Baton's RabbitMQ topology (DESIGN.md §3).
public enum Topology {
    public static let submitExchange = "baton.submit"
    public static let unroutedExchange = "baton.submit.unrouted"
    public static let unroutedQueue = "baton.submit.unrouted"
    public static let stepsExchange = "baton.steps"
    public static let signalsExchange = "baton.signals"
    public static let signalsQueue = "baton.signals"
    public static let deadExchange = "baton.dlx"
    public static let deadQueue = "baton.dead"
    public static let eventsExchange = "baton.events"

    public static func submitQueue(agent: String) -> String { "baton.submit.\(agent)" }
    public static func stepsQueue(_ queue: String) -> String { "baton.steps.\(queue)" }
}

/// Where the outbox goes: RabbitMQ with confirms in production, memory in unit tests.
public protocol MessageBus: Sendable {
    /// Publishes persistent messages and waits for the broker's confirms: one entry per message, nil when
    /// confirmed.
    func publish(_ messages: [OutboxMessage]) async -> [(any Error)?]
}
