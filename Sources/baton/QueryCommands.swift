import ArgumentParser
import Baton
import Foundation

/// `baton list`: tasks by most recent update, filtered, a page at a time.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List tasks, most recently updated first.",
        discussion:
            "With -o json: {\"items\": [task views], \"next_cursor\": \"…\" or null}; pass next_cursor to --cursor for the next page.")

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Only these statuses, comma-separated (queued, running, retrying, succeeded, …).", valueName: "a,b"))
    var status: String?

    @Option(help: "Only this agent.")
    var agent: String?

    @Option(help: "Only this tenant.")
    var tenant: String?

    @Option(help: "Only tasks whose last error has this failure bucket (e.g. provider_5xx).")
    var bucket: String?

    @Option(help: ArgumentHelp("Only tasks updated within this long (e.g. 30m, 24h, 7d).", valueName: "duration"))
    var since: String?

    @Option(help: "Tasks per page (1…1000).")
    var limit: Int = 50

    @Option(help: "The next_cursor of the previous page.")
    var cursor: String?

    func validate() throws {
        guard (1...1000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000") }
        if let since, DurationText.parse(since) == nil { throw ValidationError("--since must be a duration such as 30m, 24h or 7d") }
        if let cursor, TaskQueries.ListCursor(cursor) == nil {
            throw ValidationError("--cursor must be the next_cursor of a previous page")
        }
    }

    var filter: TaskQueries.Filter {
        var filter = TaskQueries.Filter()
        filter.statuses = (status ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        filter.agent = agent
        filter.tenant = tenant
        filter.bucket = bucket
        filter.sinceMilliseconds = since.flatMap(DurationText.parse).map {
            $0.wholeMilliseconds
        }
        filter.limit = limit
        filter.cursor = cursor.flatMap(TaskQueries.ListCursor.init)
        return filter
    }

    func run() async throws {
        let printer = global.output.printer
        let filter = filter
        try await withClient(global.connection) { client in
            let page = try await client.queries.list(filter)
            try printer.list(page.items, id: \.id, paged: true, nextCursor: page.nextCursor) { Self.render(page.items, printer: printer) }
            if printer.format == .text && !printer.quiet {
                if page.items.isEmpty { Terminal.note("no tasks match") }
                if let next = page.nextCursor { Terminal.note("more: baton list --cursor \(next) (with the same filters)") }
            }
        }
    }

    static func render(_ items: [TaskView], printer: Printer, now: Date = Date()) -> String {
        guard !items.isEmpty else { return "" }
        let rows: [[TextFormat.Cell]] = items.map { v in
            let progress = v.progress.map { "\(Int(($0.fraction * 100).rounded()))%" } ?? "-"
            return [
                TextFormat.Cell(v.id), TextFormat.Cell(v.agent), TextFormat.Cell(v.status, shown: printer.status(v.status)),
                TextFormat.Cell(v.step ?? "-"), TextFormat.Cell(String(v.seq)), TextFormat.Cell(progress),
                TextFormat.Cell(TextFormat.cost(v.budget.used.costUSD)), TextFormat.Cell(TextFormat.ago(v.updatedAt, now: now)),
                TextFormat.Cell(TextFormat.clip(v.statusReason ?? "", 60)),
            ]
        }
        return TextFormat.table(["ID", "AGENT", "STATUS", "STEP", "SEQ", "PROGRESS", "COST", "UPDATED", "REASON"], rows, printer: printer)
    }
}

/// `baton history TASK`: the task's append-only events, branches marked.
struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Show a task's events, oldest first; a redrive or fork starts a new branch, marked [b1], [b2], …."
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The task id.")
    var task: String

    @Option(help: "Only this branch.")
    var branch: Int64?

    func validate() throws {
        if let branch, branch < 0 { throw ValidationError("--branch must be ≥ 0") }
    }

    func run() async throws {
        let printer = global.output.printer
        try await withClient(global.connection) { client in
            guard try await client.queries.task(task) != nil else {
                Terminal.error(CLIExit.noTask(task))
                throw ExitCode(CLIExit.notFound)
            }
            let events = try await client.queries.history(task, branch: branch)
            try printer.list(events, id: \.id) { Self.render(events, printer: printer) }
            if printer.format == .text && !printer.quiet && events.isEmpty { Terminal.note("no events") }
        }
    }

    /// One line per event, `[bN]` first; a separator line where the branch changes.
    static func render(_ events: [TaskEvent], printer: Printer) -> String {
        var lines: [String] = []
        var current: Int64?
        for event in events {
            if let current, current != event.branch {
                lines.append(printer.paint("── branch \(event.branch) ──", "1;35"))
            }
            current = event.branch
            let branch = printer.paint("[b\(event.branch)]", event.branch == 0 ? "2" : "35")
            var line = "\(branch) \(event.at)  seq \(event.seq)  \(event.type)"
            if let step = event.step { line += "  step=\(step)" }
            if let data = event.data, data != .null, data.objectValue?.isEmpty != true {
                line += "  " + TextFormat.clip(data.jsonString, 160)
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }
}

/// `baton workers`: the workers that sent a heartbeat.
struct WorkersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workers", abstract: "List the live workers (by heartbeat), or ask one to drain.",
        discussion: """
            --drain ID asks worker ID to drain: at its next heartbeat it stops taking steps, lets running ones finish or \
            yield within its --drain-timeout (as at SIGTERM), deregisters and exits 0. The request is kept in Redis until \
            the worker honours it, and audited (worker.drain). Exit 4 when no such worker is registered.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Ask this worker to drain and exit (its id from `baton workers`).", valueName: "id"))
    var drain: String?

    @Option(help: "Why (recorded with the actor in the audit stream).")
    var reason: String = ""

    @Option(help: "Who is recorded as acting (default: $BATON_ACTOR, else cli:$USER@<short host name>).")
    var actor: String?

    func run() async throws {
        let printer = global.output.printer
        if let drain {
            let who = actor.flatMap { $0.isEmpty ? nil : $0 } ?? CLIActor.current()
            let why = reason.isEmpty ? "no reason given" : reason
            try await withClient(global.connection) { client in
                guard try await client.requestDrain(worker: drain, actor: who, reason: why) else {
                    Terminal.error("no live worker '\(drain)' (list them with `baton workers`)")
                    throw ExitCode(CLIExit.notFound)
                }
                let report = JSONValue.object([
                    "worker": .string(drain), "result": "drain_requested", "actor": .string(who), "reason": .string(why),
                ])
                try printer.one(report, id: drain) {
                    "\(drain): drain requested; it stops taking steps at its next heartbeat and exits once its running steps end"
                }
            }
            return
        }
        try await withClient(global.connection) { client in
            let workers = try await client.queries.workers()
            let staleAfter = Double(client.store.settings.workerStaleMilliseconds) / 1000
            try printer.list(workers, id: \.id) { Self.render(workers, staleAfter: staleAfter, printer: printer) }
            if printer.format == .text && !printer.quiet && workers.isEmpty { Terminal.note("no workers (start one with `baton worker`)") }
        }
    }

    /// A table of workers; one whose heartbeat is older than `staleAfter` seconds is marked `stale` (its leases
    /// count as expired).
    static func render(_ workers: [WorkerView], staleAfter: Double, printer: Printer) -> String {
        guard !workers.isEmpty else { return "" }
        let rows: [[TextFormat.Cell]] = workers.map { worker in
            let info = worker.info
            let agents = info?["agents"]?.arrayValue?.compactMap(\.stringValue).joined(separator: ",") ?? "-"
            let concurrency = info?["concurrency"]?.intValue.map(String.init) ?? "-"
            let host = info?["host"]?.stringValue ?? "-"
            let pid = info?["pid"]?.intValue.map(String.init) ?? "-"
            let age = TextFormat.relative(seconds: worker.heartbeatAgeSeconds)
            let stale = worker.heartbeatAgeSeconds > staleAfter
            let state = stale ? "stale" : worker.drain != nil ? "draining" : "live"
            let inFlight = concurrency == "-" ? "\(worker.inFlight)" : "\(worker.inFlight)/\(concurrency)"
            return [
                TextFormat.Cell(worker.id), TextFormat.Cell(state, shown: printer.paint(state, state == "live" ? "32" : "33")),
                TextFormat.Cell(age), TextFormat.Cell(inFlight),
                TextFormat.Cell(host), TextFormat.Cell(pid), TextFormat.Cell(agents),
            ]
        }
        return TextFormat.table(["ID", "STATE", "HEARTBEAT", "IN FLIGHT", "HOST", "PID", "AGENTS"], rows, printer: printer)
    }
}
