import ArgumentParser
import Baton
import Foundation

/// `baton inbox [--agent A] [--older-than 1h]`: what waits for a person, oldest first.
struct InboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inbox", abstract: "Tasks waiting for a person, oldest first: pending approvals and needs_review.",
        discussion: """
            An approval is a task waiting for the signal 'approve' (answer with `baton approve` or `baton reject`); \
            needs_review is a task parked at a cap (answer with `baton budget --raise` or `baton reject`). \
            -o json: {"items": [{"kind", "since", "age_s", "task": task view}]}.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "Only this agent.")
    var agent: String?

    @Option(help: "Only this tenant.")
    var tenant: String?

    @Option(help: ArgumentHelp("Only what has waited at least this long (e.g. 30m, 1h, 2d).", valueName: "duration"))
    var olderThan: String?

    @Option(help: "At most this many (1…1000).")
    var limit: Int = 100

    func validate() throws {
        if let olderThan, DurationText.parse(olderThan) == nil {
            throw ValidationError("--older-than must be a duration such as 30m, 1h or 2d")
        }
        guard (1...1000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000") }
    }

    func run() async throws {
        let printer = global.output.printer
        let minimum = olderThan.flatMap(DurationText.parse)
        try await withClient(global.connection) { client in
            let items = try await client.queries.inbox(agent: agent, tenant: tenant, olderThan: minimum, limit: limit)
            try printer.list(items, id: \.task.id) {
                let rows: [[TextFormat.Cell]] = items.map { item in
                    let answer = item.kind == "approval" ? "approve | reject" : "budget --raise | reject"
                    return [
                        TextFormat.Cell(item.kind), TextFormat.Cell(item.task.id), TextFormat.Cell(item.task.agent),
                        TextFormat.Cell(TextFormat.duration(item.ageSeconds)), TextFormat.Cell(answer),
                        TextFormat.Cell(TextFormat.clip(item.task.statusReason ?? "", 70)),
                    ]
                }
                return items.isEmpty
                    ? "" : TextFormat.table(["KIND", "TASK", "AGENT", "WAITING", "ANSWER WITH", "REASON"], rows, printer: printer)
            }
            if items.isEmpty && printer.format == .text && !printer.quiet { Terminal.note("nothing waits for a person") }
        }
    }
}
