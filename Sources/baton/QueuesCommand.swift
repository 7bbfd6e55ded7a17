import AMQPClient
import ArgumentParser
import Baton
import Foundation
import Logging

/// `baton queues`: each Baton queue's ready messages and consumers, read with a passive `queue.declare`.
struct QueuesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queues", abstract: "Show Baton's queues: ready messages and consumers, and queues with messages but no consumer.",
        discussion: """
            When the broker is the node that `baton services` runs on this machine, the numbers come from `rabbitmqctl \
            list_queues` (every baton.* queue, ready and unacked messages, consumers). Otherwise from a passive \
            queue.declare, which gives ready messages and consumers only, for baton.dead, baton.signals, \
            baton.submit.unrouted and the submit and step queues that workers announce in their heartbeats (plus \
            worker.queues of the configuration and --queue); unacked messages then need the RabbitMQ management plugin, \
            which Baton does not use: n/a (null in JSON). The oldest message's age needs a timestamp on the messages, \
            which Baton's publishers do not set: n/a. -o json: {"items": [{"queue", "kind", "exists", "ready", "unacked", \
            "consumers", "oldest_message_age_s", "source", "warning"}]}.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("queue"), help: "Also show this queue (full name, e.g. baton.steps.reports); repeatable.")
    var extra: [String] = []

    struct Row: Encodable {
        var queue: String
        var kind: String
        var exists: Bool
        var ready: UInt32?
        var unacked: UInt32?
        var consumers: UInt32?
        var oldestMessageAgeSeconds: Double?
        /// Where the numbers come from: `rabbitmqctl` (the local node of `baton services`) or `queue.declare`.
        var source: String
        var warning: String?

        enum CodingKeys: String, CodingKey {
            case queue, kind, exists, ready, unacked, consumers
            case oldestMessageAgeSeconds = "oldest_message_age_s"
            case source, warning
        }

        func encode(to encoder: any Encoder) throws {
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

    func run() async throws {
        let printer = global.output.printer
        let configuration = try await global.connection.load()
        let rows = try await Self.collect(configuration: configuration, extra: extra)
        try printer.list(rows, id: \.queue) { Self.render(rows, printer: printer) }
        if printer.format == .text && !printer.quiet {
            if rows.contains(where: { $0.source == "queue.declare" }) {
                Terminal.note("unacked and oldest-message age need the RabbitMQ management plugin (not used by Baton): n/a")
            } else if rows.contains(where: { $0.exists && $0.oldestMessageAgeSeconds == nil }) {
                Terminal.note("oldest-message age needs a timestamp on the messages, which Baton's publishers do not set: n/a")
            }
        }
        for row in rows where row.warning != nil && (printer.format != .text || printer.quiet) {
            Terminal.note("\(row.queue): \(row.warning ?? "")")
        }
    }

    /// The rows: from rabbitmqctl for the local node of `baton services`, else from passive declares.
    static func collect(configuration: BatonConfiguration, extra: [String]) async throws -> [Row] {
        let names = await Self.queueNames(configuration: configuration, extra: extra)
        var rows: [Row]
        let url = try? AMQPConfiguration(url: configuration.amqpURL, connectionName: "baton-cli").url
        if let url, ["127.0.0.1", "localhost", "::1"].contains(url.host),
            let stats = await LocalServices().queueStats(amqpPort: url.port, vhost: url.vhost)
        {
            rows = Self.rows(stats, names: names)
        } else {
            rows = try await Self.inspect(names, amqpURL: configuration.amqpURL)
        }
        rows.sort { ($0.exists ? 0 : 1, $0.queue) < ($1.exists ? 0 : 1, $1.queue) }
        return rows
    }

    /// Rows from `rabbitmqctl list_queues` (the local node of `baton services`): every `baton.*` queue (but the
    /// short-lived reply queues) and the expected ones that are missing.
    static func rows(_ stats: [LocalServices.QueueStats], names: [(name: String, kind: String)]) -> [Row] {
        let kinds = Dictionary(names.map { ($0.name, $0.kind) }, uniquingKeysWith: { first, _ in first })
        let now = Date().timeIntervalSince1970
        var rows: [Row] = stats.filter { kinds[$0.name] != nil || ($0.name.hasPrefix("baton.") && !$0.name.hasPrefix("baton.reply.")) }
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
    static func queueNames(configuration: BatonConfiguration, extra: [String]) async -> [(name: String, kind: String)] {
        var names: [(String, String)] = [
            (Topology.deadQueue, "dead"), (Topology.signalsQueue, "signals"), (Topology.unroutedQueue, "unrouted"),
        ]
        var agents = Set<String>()
        var queues = Set(configuration.worker.queues ?? [])
        if let client = try? await BatonClient.connect(
            amqpURL: configuration.amqpURL, redisURL: configuration.redisURL, publishing: false, settings: configuration.store,
            logger: Logger(label: "baton.cli"))
        {
            let workers = (try? await client.queries.workers()) ?? []
            await client.close()
            for worker in workers {
                for agent in worker.info?["agents"]?.arrayValue ?? [] { if let agent = agent.stringValue { agents.insert(agent) } }
                for queue in worker.info?["queues"]?.arrayValue ?? [] { if let queue = queue.stringValue { queues.insert(queue) } }
            }
        } else {
            Terminal.note("Redis is not reachable: showing the fixed queues and --queue only (workers announce the others)")
        }
        names += agents.sorted().map { (Topology.submitQueue(agent: $0), "submit") }
        names += queues.sorted().map { (Topology.stepsQueue($0), "steps") }
        names += extra.map { ($0, "extra") }
        var seen = Set<String>()
        return names.filter { seen.insert($0.0).inserted }.map { (name: $0.0, kind: $0.1) }
    }

    /// Passive declares, one per queue; a missing queue (404 closes the channel) is reported and a new channel opened.
    static func inspect(_ names: [(name: String, kind: String)], amqpURL: String) async throws -> [Row] {
        let connection: AMQPConnection
        do {
            var configuration = try AMQPConfiguration(url: amqpURL, connectionName: "baton-cli")
            configuration.connectTimeout = .seconds(5)
            connection = try await AMQPConnection.connect(configuration, logger: Logger(label: "baton.cli"))
        } catch {
            Terminal.error("\(error)")
            throw ExitCode(CLIExit.configuration)
        }
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

    static func render(_ rows: [Row], printer: Printer) -> String {
        guard !rows.isEmpty else { return "" }
        let table: [[TextFormat.Cell]] = rows.map { row in
            [
                TextFormat.Cell(row.queue), TextFormat.Cell(row.kind), TextFormat.Cell(row.ready.map(String.init) ?? "-"),
                TextFormat.Cell(row.unacked.map(String.init) ?? (row.exists ? "n/a" : "-")),
                TextFormat.Cell(row.consumers.map(String.init) ?? "-"),
                TextFormat.Cell(row.oldestMessageAgeSeconds.map { TextFormat.relative(seconds: $0) } ?? (row.exists ? "n/a" : "-")),
                TextFormat.Cell(row.warning ?? "", shown: row.warning.map { printer.paint($0, "33") } ?? ""),
            ]
        }
        return TextFormat.table(["QUEUE", "KIND", "READY", "UNACKED", "CONSUMERS", "OLDEST", "WARNING"], table, printer: printer)
    }
}
