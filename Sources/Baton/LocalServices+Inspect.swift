import Foundation

extension LocalServices {
    /// The broker's `consumer_timeout`, read from the local node that `baton services start` runs, when that
    /// node is the one listening on `amqpPort` of this machine.
    public enum ConsumerTimeout: Sendable, Equatable {
        /// The timeout in milliseconds.
        case milliseconds(Int64)
        /// The node has no `consumer_timeout` (deliveries are never timed out).
        case disabled
        /// It cannot be read here; the text says why.
        case unknown(String)
    }

    /// Reads `consumer_timeout` with `rabbitmqctl eval` (which needs no management plugin and works on 3.10):
    /// only for the node this machine's `baton services` started on `amqpPort` (its Erlang cookie is in the
    /// services folder); any other broker is `.unknown` with the reason.
    public func consumerTimeout(amqpPort: Int, timeout: Duration = .seconds(60)) async -> ConsumerTimeout {
        guard let state = try? loadState(), let record = state.rabbitmq, record.port == amqpPort else {
            return .unknown(
                "the broker on port \(amqpPort) was not started by `baton services` here, so rabbitmqctl cannot reach it without "
                    + "its Erlang cookie; check consumer_timeout in its rabbitmq.conf (3.10 default: 30 minutes)")
        }
        let rabbitmqctl = configuration.rabbitMQBinDirectory + "/rabbitmqctl"
        guard FileManager.default.isExecutableFile(atPath: rabbitmqctl) else {
            return .unknown("\(rabbitmqctl) is not installed")
        }
        let output = rabbitMQPaths.logs + "/rabbitmqctl-eval.out"
        let node = record.node ?? configuration.rabbitMQNodeName
        do {
            let status = try await ChildProcess.run(
                rabbitmqctl, ["-n", node, "eval", "application:get_env(rabbit, consumer_timeout)."], environment: rabbitMQEnvironment(),
                outputFile: output, timeout: timeout)
            let text = (try? String(contentsOfFile: output, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            guard status == 0 else { return .unknown("rabbitmqctl eval exited with status \(status): \(text.suffix(300))") }
            return Self.parseConsumerTimeout(text)
        } catch {
            return .unknown("cannot run rabbitmqctl: \(error)")
        }
    }

    /// `{ok,1800000}` → 1800000 ms; `undefined` → disabled (the setting is absent: no timeout).
    static func parseConsumerTimeout(_ text: String) -> ConsumerTimeout {
        let line = text.split(separator: "\n").last.map(String.init) ?? ""
        if line == "undefined" { return .disabled }
        if line.hasPrefix("{ok,"), line.hasSuffix("}") {
            let value = line.dropFirst(4).dropLast()
            if let ms = Int64(value) { return .milliseconds(ms) }
            if value == "false" || value == "infinity" { return .disabled }
        }
        return .unknown("unexpected answer from rabbitmqctl eval: \(line)")
    }
}

extension LocalServices {
    /// One queue as `rabbitmqctl list_queues` reports it.
    public struct QueueStats: Sendable, Hashable {
        public var name: String
        public var ready: Int
        public var unacked: Int
        public var consumers: Int
        /// The `timestamp` property of the queue's first message (seconds), when its publisher set one.
        public var headMessageTimestamp: Int64?
    }

    /// Every queue of `vhost` with ready and unacked messages and consumers, from `rabbitmqctl list_queues` on the
    /// node that `baton services` runs here on `amqpPort`; nil for any other broker or when rabbitmqctl fails
    /// (then only a passive `queue.declare` is available: ready messages and consumers).
    public func queueStats(amqpPort: Int, vhost: String = "/", timeout: Duration = .seconds(60)) async -> [QueueStats]? {
        guard let state = try? loadState(), let record = state.rabbitmq, record.port == amqpPort else { return nil }
        let rabbitmqctl = configuration.rabbitMQBinDirectory + "/rabbitmqctl"
        guard FileManager.default.isExecutableFile(atPath: rabbitmqctl) else { return nil }
        let output = rabbitMQPaths.logs + "/rabbitmqctl-list-queues-\(getpid()).out"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let node = record.node ?? configuration.rabbitMQNodeName
        guard
            let status = try? await ChildProcess.run(
                rabbitmqctl,
                [
                    "-n", node, "list_queues", "-q", "-p", vhost.isEmpty ? "/" : vhost, "--formatter", "json", "name", "messages_ready",
                    "messages_unacknowledged", "consumers", "head_message_timestamp",
                ], environment: rabbitMQEnvironment(), outputFile: output, timeout: timeout), status == 0,
            let text = try? String(contentsOfFile: output, encoding: .utf8), let start = text.firstIndex(of: "["),
            let rows = try? JSONSerialization.jsonObject(with: Data(text[start...].utf8)) as? [[String: Any]]
        else { return nil }
        return rows.compactMap { row in
            guard let name = row["name"] as? String else { return nil }
            func int(_ key: String) -> Int { (row[key] as? NSNumber)?.intValue ?? 0 }
            return QueueStats(
                name: name, ready: int("messages_ready"), unacked: int("messages_unacknowledged"), consumers: int("consumers"),
                headMessageTimestamp: (row["head_message_timestamp"] as? NSNumber)?.int64Value)
        }
    }
}
