import ArgumentParser
import Baton
import Foundation

/// `baton audit [--limit N]`: the operator actions recorded in `baton:audit`, newest first.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Show the audit stream: who did what (cancel, pause, resume, redrive, discard), newest first.",
        discussion: """
            -o json: {"items": [{"id", "at", "actor", "action", "target", "filter", "count", "reason"}]}; a bulk action is one \
            entry with its filter, the count done and (up to 50 of) the ids.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "At most this many entries (1…10000).")
    var limit: Int = 50

    func validate() throws {
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be from 1 to 10000") }
    }

    func run() async throws {
        let printer = global.output.printer
        try await withClient(global.connection) { client in
            let entries = try await client.queries.auditEntries(limit: limit)
            try printer.list(entries, id: \.id) { Self.render(entries, printer: printer) }
            if printer.format == .text && !printer.quiet && entries.isEmpty { Terminal.note("the audit stream is empty") }
        }
    }

    static func render(_ entries: [AuditEntry], printer: Printer, now: Date = Date()) -> String {
        guard !entries.isEmpty else { return "" }
        let rows: [[TextFormat.Cell]] = entries.map { entry in
            [
                TextFormat.Cell(TextFormat.ago(entry.at, now: now)), TextFormat.Cell(entry.actor), TextFormat.Cell(entry.action),
                TextFormat.Cell(String(entry.count)), TextFormat.Cell(entry.filter ?? "-"),
                TextFormat.Cell(TextFormat.clip(entry.target ?? "-", 40)), TextFormat.Cell(TextFormat.clip(entry.reason, 60)),
            ]
        }
        return TextFormat.table(["WHEN", "ACTOR", "ACTION", "COUNT", "FILTER", "TARGET", "REASON"], rows, printer: printer)
    }
}
