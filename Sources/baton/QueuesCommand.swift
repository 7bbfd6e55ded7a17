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
            which Baton does not use: n/a (null in JSON). The oldest message's age comes from rabbitmqctl's \
            head_message_timestamp (Baton's publishers set the AMQP timestamp) where the broker reports it, else n/a. -o json: {"items": [{"queue", "kind", "exists", "ready", "unacked", \
            "consumers", "oldest_message_age_s", "source", "warning"}]}.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("queue"), help: "Also show this queue (full name, e.g. baton.steps.reports); repeatable.")
    var extra: [String] = []

    typealias Row = QueueReport.Row

    func run() async throws {
        let printer = global.output.printer
        let configuration = try await global.connection.load()
        let rows = try await Self.collect(configuration: configuration, extra: extra)
        try printer.list(rows, id: \.queue) { Self.render(rows, printer: printer) }
        if printer.format == .text && !printer.quiet {
            if rows.contains(where: { $0.source == "queue.declare" }) {
                Terminal.note("unacked and oldest-message age need the RabbitMQ management plugin (not used by Baton): n/a")
            } else if rows.contains(where: { $0.exists && $0.oldestMessageAgeSeconds == nil }) {
                Terminal.note("oldest-message age: the broker reports no head_message_timestamp for these queues: n/a")
            }
        }
        for row in rows where row.warning != nil && (printer.format != .text || printer.quiet) {
            Terminal.note("\(row.queue): \(row.warning ?? "")")
        }
    }

    /// The rows (``QueueReport``), with the workers' announced queues when Redis answers.
    static func collect(configuration: BatonConfiguration, extra: [String]) async throws -> [Row] {
        var workers: [WorkerView]? = nil
        if let client = try? await BatonClient.connect(
            amqpURL: configuration.amqpURL, redisURL: configuration.redisURL, publishing: false, settings: configuration.store,
            logger: Logger(label: "baton.cli"))
        {
            workers = (try? await client.queries.workers()) ?? []
            await client.close()
        } else {
            Terminal.note("Redis is not reachable: showing the fixed queues and --queue only (workers announce the others)")
        }
        do {
            return try await QueueReport.collect(
                amqpURL: configuration.amqpURL, workers: workers, configuredQueues: configuration.worker.queues ?? [], extra: extra)
        } catch {
            Terminal.error("\(error)")
            throw ExitCode(CLIExit.configuration)
        }
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
