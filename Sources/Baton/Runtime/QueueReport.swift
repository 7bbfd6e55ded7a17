import AMQPClient
import Foundation
import Logging

/// Baton's queues with their ready and unacked messages, consumers and oldest message's age: what `baton queues`
/// prints, `GET /v1/queues` answers and `baton serve`'s `/metrics` exports (`baton_queue_messages`, …).
///
/// When the broker is the node that `baton services` runs on this machine, the numbers come from `rabbitmqctl
/// list_queues`; otherwise from a passive `queue.declare` (ready messages and consumers only).
public enum QueueReport {
    public struct Row: Encodable, Sendable {
        public var queue: String
        public var kind: String
        public var exists: Bool
        public var ready: UInt32?
        public var unacked: UInt32?
        public var consumers: UInt32?
        public var oldestMessageAgeSeconds: Double?
        /// Where the numbers come from: `rabbitmqctl` (the local node of `baton services`) or `queue.declare`.
        public var source: String
        public var warning: String?

        enum CodingKeys: String, CodingKey {
            case queue, kind, exists, ready, unacked, consumers
            case oldestMessageAgeSeconds = "oldest_message_age_s"
            case source, warning
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(queue, forKey: .queue)
            try container.encode(kind, forKey: .kind)
            try container.encode(exists, forKey: .exists)
            try container.encode(ready, forKey: .ready)
            try container.encode(unacked, forKey: .unacked)
            try container.encode(consumers, forKey: .consumers)
            try container.encode(oldestMessageAgeSeconds, forKey: .oldestMessageAgeSeconds)
            try container.encode(source, forKey: .source)
            try container.encode(warning, forKey: .warning)
        }
    }

    /// The rows: from rabbitmqctl for the local node of `baton services`, else from passive declares.
    ///
    /// - Parameters:
    ///   - workers: the live workers (they announce their agents and step queues); nil when Redis is unreachable.
    ///   - configuredQueues: `worker.queues` of the configuration.
    ///   - extra: more queues to show (full names).
    public static func collect(amqpURL: String, workers: [WorkerView]?, configuredQueues: [String], extra: [String]) async throws
        -> [Row]
    {
        let names = queueNames(workers: workers ?? [], configuredQueues: configuredQueues, extra: extra)
        var rows: [Row]
        let url = try? AMQPConfiguration(url: amqpURL, connectionName: "baton-cli").url
        if let url, ["127.0.0.1", "localhost", "::1"].contains(url.host),
            let stats = await LocalServices().queueStats(amqpPort: url.port, vhost: url.vhost)
        {
            rows = Self.rows(stats, names: names)
        } else {
            rows = try await Self.inspect(names, amqpURL: amqpURL)
        }
        rows.sort { ($0.exists ? 0 : 1, $0.queue) < ($1.exists ? 0 : 1, $1.queue) }
        return rows
    }

    /// A `baton.*` queue, but not a short-lived reply queue nor a `GET /v1/events` client's tail queue.
    static func isListed(_ name: String) -> Bool {
        name.hasPrefix("baton.") && !name.hasPrefix("baton.reply.") && !name.hasPrefix(EventSubscription.queuePrefix)
    }

    /// Rows from `rabbitmqctl list_queues` (the local node of `baton services`): every `baton.*` queue (but the
    /// short-lived reply and tail queues, ``isListed(_:)``) and the expected ones that are missing.
    static func rows(_ stats: [LocalServices.QueueStats], names: [(name: String, kind: String)]) -> [Row] {
        let kinds = Dictionary(names.map { ($0.name, $0.kind) }, uniquingKeysWith: { first, _ in first })
        let now = Date().timeIntervalSince1970
        var rows: [Row] = stats.filter { kinds[$0.name] != nil || Self.isListed($0.name) }
            .map { stat in
                var row = Row(
                    queue: stat.name, kind: kinds[stat.name] ?? kind(of: stat.name), exists: true, ready: UInt32(clamping: stat.ready),
                    unacked: UInt32(clamping: stat.unacked), consumers: UInt32(clamping: stat.consumers), source: "rabbitmqctl")
                row.oldestMessageAgeSeconds = stat.headMessageTimestamp.map { max(0, now - Double($0)) }
                if stat.ready > 0 && stat.consumers == 0 {
                    row.warning = "no live consumer: \(stat.ready) message(s) wait and nothing consumes them"
                }
                return row
            }
        let present = Set(stats.map(\.name))
        for (name, kind) in names where !present.contains(name) {
            rows.append(
                Row(queue: name, kind: kind, exists: false, source: "rabbitmqctl", warning: "missing: start a worker to declare it"))
        }
        return rows
    }

    /// `submit`, `steps`, … from a queue's name.
    static func kind(of name: String) -> String {
        switch name {
        case Topology.deadQueue: "dead"
        case Topology.signalsQueue: "signals"
        case Topology.unroutedQueue: "unrouted"
        default:
            name.hasPrefix("baton.submit.") ? "submit" : name.hasPrefix("baton.steps.") ? "steps" : "other"
        }
    }

    /// The queues to show: the fixed ones, those of the agents and step queues that workers announce, the
    /// configured step queues and `extra`.
    static func queueNames(workers: [WorkerView], configuredQueues: [String], extra: [String]) -> [(name: String, kind: String)] {
        var names: [(String, String)] = [
            (Topology.deadQueue, "dead"), (Topology.signalsQueue, "signals"), (Topology.unroutedQueue, "unrouted"),
        ]
        var agents = Set<String>()
        var queues = Set(configuredQueues)
        for worker in workers {
            for agent in worker.info?["agents"]?.arrayValue ?? [] { if let agent = agent.stringValue { agents.insert(agent) } }
            for queue in worker.info?["queues"]?.arrayValue ?? [] { if let queue = queue.stringValue { queues.insert(queue) } }
        }
        names += agents.sorted().map { (Topology.submitQueue(agent: $0), "submit") }
        names += queues.sorted().map { (Topology.stepsQueue($0), "steps") }
        names += extra.map { ($0, "extra") }
        var seen = Set<String>()
        return names.filter { seen.insert($0.0).inserted }.map { (name: $0.0, kind: $0.1) }
    }

    /// Passive declares, one per queue; a missing queue (404 closes the channel) is reported and a new channel opened.
    static func inspect(_ names: [(name: String, kind: String)], amqpURL: String) async throws -> [Row] {
        var configuration = try AMQPConfiguration(url: amqpURL, connectionName: "baton-queues")
        configuration.connectTimeout = .seconds(5)
        let connection = try await AMQPConnection.connect(configuration, logger: Logger(label: "baton.queues"))
        var rows: [Row] = []
        do {
            var channel = try await connection.openChannel()
            for (name, kind) in names {
                do {
                    let info = try await channel.inspectQueue(name)
                    var row = Row(
                        queue: name, kind: kind, exists: true, ready: info.messageCount, consumers: info.consumerCount,
                        source: "queue.declare")
                    if info.messageCount > 0 && info.consumerCount == 0 {
                        row.warning = "no live consumer: \(info.messageCount) message(s) wait and nothing consumes them"
                    }
                    rows.append(row)
                } catch let error as AMQPError where error.serverCode == 404 {
                    rows.append(
                        Row(
                            queue: name, kind: kind, exists: false, source: "queue.declare",
                            warning: "missing: start a worker to declare it"))
                    channel = try await connection.openChannel()
                }
            }
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
        return rows
    }
}
