import AMQPClient
import Foundation
import Logging
import RedisClient

/// Takes dead letters from `baton.dead` into Redis (`baton:dead:*`) so operators can list, show, redrive and
/// discard them. A step message that hit the quorum queue's delivery limit (a poison message that kept
/// crashing workers) also marks its task `dead_lettered`.
struct DeadLetterIntake: Sendable {
    let store: RedisTaskStore
    let logger: Logger

    func consume(_ consumer: AMQPConsumer) async {
        for await delivery in consumer.deliveries {
            do {
                try await take(delivery)
                try? await consumer.channel.ack(delivery)
            } catch {
                logger.warning("dead letter not stored yet; it will be redelivered", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
                try? await consumer.channel.nack(delivery, requeue: true)
            }
        }
    }

    func take(_ delivery: AMQPDelivery) async throws {
        let headers = delivery.properties.headers ?? [:]
        func header(_ name: String) -> String? { headers[name]?.stringValue ?? headers[name]?.intValue.map(String.init) }
        let body = String(decoding: delivery.body, as: UTF8.self)
        var fields: [String: String] = [:]
        var reason = header("x-baton-reason") ?? ""
        var error = header("x-baton-error") ?? ""
        if reason.isEmpty {
            switch header("x-first-death-reason") ?? "" {
            case "delivery_limit":
                reason = "delivery_limit"
                error = "delivered \(delivery.deliveryCount) times without an ack (a poison message: workers crashed or hung on it)"
            case "expired": reason = "expired"
            case "maxlen": reason = "queue_full"
            default: reason = "malformed"
            }
            if error.isEmpty { error = "dead-lettered by RabbitMQ (\(header("x-first-death-reason") ?? "unknown"))" }
        }
        var step = StepMessage?.none
        if let parsed = try? StepMessage.decode(delivery.body) { step = parsed }
        fields["reason"] = reason
        fields["error"] = error
        fields["task_id"] = header("x-baton-task") ?? step?.task ?? ""
        fields["agent"] = header("x-baton-agent") ?? step?.agent ?? ""
        fields["step"] = header("x-baton-step") ?? step?.step ?? ""
        fields["seq"] = header("x-baton-seq") ?? step.map { String($0.seq) } ?? ""
        fields["branch"] = header("x-baton-branch") ?? step.map { String($0.branch) } ?? ""
        fields["attempts"] = header("x-baton-attempts") ?? step.map { String($0.attempt) } ?? ""
        fields["bucket"] = header("x-baton-bucket") ?? ""
        fields["worker"] = header("x-baton-worker") ?? ""
        fields["field"] = header("x-baton-field") ?? ""
        fields["dead_at"] = header("x-baton-dead-at") ?? ISO8601DateFormatter.fractional.string(from: Date())
        fields["routing_key"] = delivery.routingKey
        fields["body"] = body
        // Stored once (a stable id) with its fingerprint, and counted in its fingerprint group.
        try await store.recordDeadLetter(fields)
        if reason == "delivery_limit", let step {
            let errorJSON = JSONValue.object([
                "code": "delivery_limit", "message": .string(error), "bucket": "poison", "retryable": false,
            ]).jsonString
            _ = try await store.control(
                task: step.task, action: "dead", reason: "delivery_limit", actor: "dead-letter-intake", extra: errorJSON,
                expectedSeq: String(step.seq))
        }
    }
}
