import ArgumentParser
import Baton
import Foundation

/// `baton watch [TASK…] [--agent A]`: follows tasks from their events until they end.
///
/// On a terminal (text output to a tty) it redraws one line per task — a progress bar, status, step, the step's
/// message, budget used against its limit and what a waiting task waits for — each time new events arrive. Into a
/// pipe it prints one plain line per event (`-o jsonl` / `--json`: one JSON object per event, the history's event
/// with `task_id` and `agent` added). Decision (docs/design-decisions.md): with no task named it watches every
/// live task (of `--agent`), picks up tasks that start while it runs, and ends when none is live.
/// Exit 0 when every watched task succeeded, 3 when one ended otherwise, 4 when a named task does not exist.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Follow tasks live until they end: progress bars on a terminal, one line per event in a pipe.",
        discussion: """
            With no TASK, every live task (of --agent) is watched, including ones that start meanwhile; it ends when \
            none is live. Exit 0 when all watched tasks succeeded, 3 when one ended in another status, 4 when a named \
            task does not exist.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The tasks to watch (default: every live task).")
    var tasks: [String] = []

    @Option(help: "With no TASK: only this agent's tasks.")
    var agent: String?

    @Option(help: ArgumentHelp("How often to look for new events (e.g. 200ms, 1s).", valueName: "duration"))
    var interval: String = "250ms"

    func validate() throws {
        if !tasks.isEmpty && agent != nil { throw ValidationError("--agent selects tasks only when no TASK is named") }
        guard let poll = DurationText.parse(interval), poll > .zero else {
            throw ValidationError("--interval must be a duration such as 200ms or 1s")
        }
    }

    static let liveStatuses = ["queued", "running", "retrying", "waiting", "sleeping", "paused", "needs_review"]

    func run() async throws {
        let printer = global.output.printer
        let poll = DurationText.parse(interval) ?? .milliseconds(250)
        let live = printer.format == .text && !printer.quiet && isatty(STDOUT_FILENO) == 1
        var renderer = WatchRenderer(printer: printer, live: live)
        let exit: Int32 = try await withClient(global.connection) { client in
            var watched: [String: Watched] = [:]
            var order: [String] = []
            func add(_ view: TaskView) {
                guard watched[view.id] == nil else { return }
                watched[view.id] = Watched(view: view, lastEvent: "-")
                order.append(view.id)
            }
            for id in tasks {
                guard let view = try await client.queries.task(id) else {
                    throw BatonError(.notFound, "task \(id) not found (check the id with `baton list`)")
                }
                add(view)
            }
            let following = tasks.isEmpty
            var lastDiscovery = ContinuousClock.now - .seconds(10)
            var rediscovered = false
            while true {
                if following && ContinuousClock.now - lastDiscovery >= .seconds(1) {
                    lastDiscovery = .now
                    var filter = TaskQueries.Filter()
                    filter.statuses = Self.liveStatuses
                    filter.agent = agent
                    filter.limit = 1000
                    for view in try await client.queries.list(filter).items.reversed() { add(view) }
                    if watched.isEmpty {
                        Terminal.note("no live tasks\(agent.map { " of agent \($0)" } ?? "")")
                        return 0
                    }
                }
                // New events of every task not yet ended; a task's view is re-read only when it has new events.
                let open = order.filter { watched[$0]?.ended == false }
                let updates = try await withThrowingTaskGroup(of: (String, [TaskEvent], TaskView?).self) { group in
                    for id in open {
                        let after = watched[id]?.lastEvent ?? "-"
                        group.addTask {
                            let events = try await client.queries.history(id, after: after, count: 1000)
                            return (id, events, events.isEmpty ? nil : try await client.queries.task(id))
                        }
                    }
                    var out: [String: ([TaskEvent], TaskView?)] = [:]
                    for try await (id, events, view) in group { out[id] = (events, view) }
                    return out
                }
                for id in open {
                    guard let (events, view) = updates[id], let last = events.last else {
                        // No new event since the view turned terminal: everything up to its end was shown.
                        if watched[id]?.view.isTerminal == true { watched[id]?.drained = true }
                        continue
                    }
                    watched[id]?.lastEvent = last.id
                    if let view { watched[id]?.view = view }
                    let agentName = watched[id]?.view.agent ?? ""
                    for event in events { try renderer.event(event, task: id, agent: agentName) }
                }
                renderer.frame(order.compactMap { watched[$0]?.view })
                if order.allSatisfy({ watched[$0]?.ended == true }) {
                    // Following: look once more for tasks that started meanwhile before ending.
                    guard following && !rediscovered else { break }
                    rediscovered = true
                    lastDiscovery = .now - .seconds(10)
                    continue
                }
                rediscovered = false
                try await Task.sleep(for: poll)
            }
            renderer.finish(order.compactMap { watched[$0]?.view })
            return order.allSatisfy { watched[$0]?.view.status == "succeeded" } ? 0 : CLIExit.notSucceeded
        }
        if exit != 0 { throw ExitCode(exit) }
    }

    struct Watched {
        var view: TaskView
        var lastEvent: String
        /// The view is terminal and a read after that found no newer event.
        var drained = false
        var ended: Bool { view.isTerminal && drained }
    }
}

/// How `baton watch` shows what it sees: a redrawn screen on a terminal, else one line (or JSON object) per event.
struct WatchRenderer {
    var printer: Printer
    var live: Bool
    private var linesDrawn = 0
    private var lastFrame = ""

    init(printer: Printer, live: Bool) {
        self.printer = printer
        self.live = live
    }

    /// One event: a plain line or a JSON object into a pipe; nothing on a terminal (the frame shows it).
    mutating func event(_ event: TaskEvent, task: String, agent: String) throws {
        guard !live else { return }
        if printer.quiet {
            if TaskView.terminalStatuses.contains(event.type) { Self.emit(task) }
            return
        }
        switch printer.format {
        case .json, .jsonl:
            var object: [String: JSONValue] = [
                "task_id": .string(task), "agent": .string(agent), "id": .string(event.id), "type": .string(event.type),
                "seq": .int(event.seq), "branch": .int(event.branch), "at": .string(event.at),
            ]
            if let step = event.step { object["step"] = .string(step) }
            if let data = event.data { object["data"] = data }
            Self.emit(JSONValue.object(object).jsonString)
        case .text:
            Self.emit(Self.line(event, task: task))
        }
    }

    /// Writes one line to stdout unbuffered, so a reader at the other end of a pipe sees each event at once.
    static func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// `<at>  <task>  <type>  seq=N  step=S  <detail>`.
    static func line(_ event: TaskEvent, task: String) -> String {
        var text = "\(event.at)  \(task)  \(event.type)  seq=\(event.seq)"
        if let step = event.step { text += "  step=\(step)" }
        if event.branch > 0 { text += "  branch=\(event.branch)" }
        if let detail = detail(event) { text += "  \(detail)" }
        return text
    }

    static func detail(_ event: TaskEvent) -> String? {
        guard let data = event.data else { return nil }
        switch event.type {
        case "progress":
            let fraction = data["fraction"]?.doubleValue ?? data["fraction"]?.intValue.map(Double.init)
            let percent = fraction.map { "\(Int(($0 * 100).rounded()))%" } ?? ""
            return [percent, data["message"]?.stringValue ?? ""].filter { !$0.isEmpty }.joined(separator: " ")
        default:
            guard case .object(let fields) = data, !fields.isEmpty else { return nil }
            return TextFormat.clip(data.jsonString, 120)
        }
    }

    /// Redraws the screen on a terminal when anything shown changed.
    mutating func frame(_ views: [TaskView], now: Date = Date()) {
        guard live else { return }
        let text = Self.render(views, printer: printer)
        guard text != lastFrame else { return }
        lastFrame = text
        var out = ""
        if linesDrawn > 0 { out += "\u{1B}[\(linesDrawn)F" }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for line in lines { out += "\u{1B}[2K" + line + "\n" }
        out += "\u{1B}[J"
        linesDrawn = lines.count
        FileHandle.standardOutput.write(Data(out.utf8))
    }

    /// The last frame, and a one-line summary into a pipe.
    mutating func finish(_ views: [TaskView]) {
        if live {
            frame(views)
            return
        }
        guard printer.format == .text && !printer.quiet else { return }
        let counts = Dictionary(grouping: views, by: \.status).map { "\($0.value.count) \($0.key)" }.sorted()
        Self.emit("watched \(views.count) task(s): \(counts.joined(separator: ", "))")
    }

    /// One line per task: id, bar, percentage, status, step, budget used / limit, message or what it waits for.
    static func render(_ views: [TaskView], printer: Printer) -> String {
        let idWidth = min(40, views.map(\.id.count).max() ?? 0)
        var lines: [String] = []
        for view in views {
            let fraction = view.status == "succeeded" ? 1 : min(1, max(0, view.progress?.fraction ?? 0))
            let filled = Int((fraction * 20).rounded())
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: 20 - filled)
            let id = TextFormat.clip(view.id, 40).padding(toLength: idWidth, withPad: " ", startingAt: 0)
            let percent = String(format: "%3d%%", Int((fraction * 100).rounded()))
            let status = printer.status(view.status) + String(repeating: " ", count: max(0, 13 - view.status.count))
            var budget = TextFormat.cost(view.budget.used.costUSD)
            if let limit = view.budget.limits.maxCostUSD { budget += "/" + TextFormat.cost(limit) }
            let step = "\(view.step ?? "-")@\(view.seq)"
            let note: String
            switch view.status {
            case "waiting", "sleeping", "needs_review", "retrying", "paused":
                note = view.statusReason ?? view.progress?.message ?? ""
            case "failed", "dead_lettered", "budget_exceeded", "cancelled":
                note = view.error?["message"]?.stringValue ?? view.statusReason ?? ""
            default:
                note = view.progress?.message ?? ""
            }
            lines.append("\(id)  \(bar) \(percent)  \(status) \(step)  \(budget)  \(TextFormat.clip(note, 70))")
        }
        let ended = views.filter(\.isTerminal).count
        lines.append("\(ended)/\(views.count) ended")
        return lines.joined(separator: "\n")
    }
}
