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
            The queues: baton.dead, baton.signals, baton.submit.unrouted, and the submit and step queues of the agents and \
            queues that workers announce in their heartbeats (plus worker.queues of the configuration and --queue). Counts \
            come from a passive queue.declare: ready messages and consumers. Unacked messages and the oldest message's age \
            need the RabbitMQ management plugin, which Baton does not use: they are shown as n/a (null in JSON). \
            -o json: {"items": [{"queue", "kind", "exists", "ready", "unacked", "consumers", "oldest_message_age_s", "warning"}]}.
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
        var warning: String?

        enum CodingKeys: String, CodingKey {
            case queue, kind, exists, ready, unacked, consumers
            case oldestMessageAgeSeconds = "oldest_message_age_s"
            case warning
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
            try container.encode(warning, forKey: .warning)
        }
    }

    func run() async throws {
        let printer = global.output.printer
        let configuration = try await global.connection.load()
        let names = await Self.queueNames(configuration: configuration, extra: extra)
        let rows = try await Self.inspect(names, amqpURL: configuration.amqpURL)
        try printer.list(rows, id: \.queue) { Self.render(rows, printer: printer) }
        if printer.format == .text && !printer.quiet {
            Terminal.note("unacked and oldest-message age need the RabbitMQ management plugin (not used by Baton): n/a")
        }
        for row in rows where row.warning != nil && (printer.format != .text || printer.quiet) {
            Terminal.note("\(row.queue): \(row.warning ?? "")")
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
                    var row = Row(queue: name, kind: kind, exists: true, ready: info.messageCount, consumers: info.consumerCount)
                    if info.messageCount > 0 && info.consumerCount == 0 {
                        row.warning = "no live consumer: \(info.messageCount) message(s) wait and nothing consumes them"
                    }
                    rows.append(row)
                } catch let error as AMQPError where error.serverCode == 404 {
                    rows.append(Row(queue: name, kind: kind, exists: false, warning: "missing: start a worker to declare it"))
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
                TextFormat.Cell("n/a"), TextFormat.Cell(row.consumers.map(String.init) ?? "-"),
                TextFormat.Cell(row.warning ?? "", shown: row.warning.map { printer.paint($0, "33") } ?? ""),
            ]
        }
        return TextFormat.table(["QUEUE", "KIND", "READY", "UNACKED", "CONSUMERS", "WARNING"], table, printer: printer)
    }
}
