import ArgumentParser
import Baton
import Foundation

/// Sends `signal` through the client, prints what happened, and exits 4 (no such task), 5 (the task ended)
/// or 1 (mailbox full) when it was not taken.
func sendSignal(_ signal: TaskSignal, global: GlobalOptions) async throws {
    let printer = global.output.printer
    try await withClient(global.connection, publishing: true) { client in
        let outcome = try await client.signal(signal)
        let report = SignalReport(signal, outcome: outcome)
        var text: String
        var exit: Int32 = 0
        switch outcome {
        case .woke:
            text = "\(signal.task): signal '\(signal.name)' delivered; the task woke up (now \(printer.status("queued")))"
        case .stored(let status):
            text =
                "\(signal.task): signal '\(signal.name)' kept in the task's mailbox (it is \(printer.status(status)), not waiting for it yet); a wait for it consumes it at once"
        case .duplicate:
            text = "\(signal.task): a signal with id '\(signal.id)' was already received; nothing changed"
        case .notFound:
            text = "\(signal.task): no such task"
            exit = CLIExit.notFound
        case .terminal(let status):
            text = "\(signal.task): cannot signal: the task already ended (\(printer.status(status)))"
            exit = CLIExit.conflict
        case .mailboxFull(let cap):
            text =
                "\(signal.task): signal refused: the task's mailbox already holds \(cap) signals it does not wait for (the cap); let the task consume them, or cancel it"
            exit = CLIExit.failed
        }
        if exit != 0 && (printer.format != .text || printer.quiet) { Terminal.error(text) }
        try printer.one(report, id: signal.task) { text }
        if exit != 0 { throw ExitCode(exit) }
    }
}

/// Parses a `--payload` value: JSON, or `@file`.
func parsePayload(_ text: String?, option: String = "--payload") throws -> String {
    guard var text else { return "" }
    if text.hasPrefix("@") {
        guard let data = FileManager.default.contents(atPath: String(text.dropFirst())) else {
            throw ValidationError("cannot read the \(option) file \(text.dropFirst())")
        }
        text = String(decoding: data, as: UTF8.self)
    }
    do {
        return try JSONValue.parse(Array(text.utf8)).jsonString
    } catch {
        throw ValidationError(
            "\(option) is not valid JSON (\(error)); quote strings, e.g. \(option) '\"yes\"' or \(option) '{\"ok\":true}'")
    }
}

/// `baton signal TASK NAME`.
struct SignalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signal", abstract: "Send a named signal to a task (wakes it when it waits for that signal; else kept).",
        discussion: """
            A signal for a task that is not (yet) waiting for it is kept in the task's mailbox (see `baton status`) and consumed \
            when a wait for it begins. Sending the same --id twice delivers it once. Exit 4 when the task does not exist, 5 when \
            it already ended, 1 when its mailbox is full.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The task id.") var task: String
    @Argument(help: "The signal name, e.g. approve, callback.") var name: String
    @Option(help: "The payload: JSON or @file.") var payload: String?
    @Option(help: "A dedupe id: a second signal with the same id is a no-op (default: a new id).") var id: String?
    @Option(help: "Why (recorded with the actor).") var reason: String = ""

    func validate() throws {
        if !TaskID.isValidName(name) { throw ValidationError("the signal name must be 1–100 letters, digits, '-', '_' or '.'") }
    }

    func run() async throws {
        let signal = TaskSignal(
            task: task, name: name, payloadJSON: try parsePayload(payload), id: id, actor: CLIActor.current(), reason: reason)
        try await sendSignal(signal, global: global)
    }
}

/// `baton approve TASK [--edit @patch.json]`, or a bulk approve by the Inbox's filters.
struct ApproveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve", abstract: "Approve a task waiting for a decision (the signal 'approve', with actor and reason).",
        discussion: """
            --edit applies an RFC 7396 JSON merge patch to the payload the woken step receives: to --payload when given,             else to the task's input (what the approver reviewed); the history records the patch and who edited.             Without a TASK, approves every pending approval the filters (--agent, --tenant, --older-than) or --all select:             --dry-run shows the count and five of them, else it asks (or --yes), needs --reason, and writes one audit             entry. Exit 4 when the task does not exist, 5 when it already ended.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The task id; omit it to approve every pending approval the filters select.") var task: String?
    @Option(help: "A payload for the resumed step: JSON or @file.") var payload: String?
    @Option(help: "An RFC 7396 JSON merge patch (JSON or @file) applied to --payload, else to the task's input.") var edit: String?
    @Option(name: [.long, .customLong("comment")], help: "Why (recorded with the actor).") var reason: String = ""
    @Option(help: "A dedupe id (default: a new id).") var id: String?
    @Option(help: "Bulk: only this agent's approvals.") var agent: String?
    @Option(help: "Bulk: only this tenant's approvals.") var tenant: String?
    @Option(help: ArgumentHelp("Bulk: only approvals waiting at least this long (e.g. 30m, 1h).", valueName: "duration"))
    var olderThan: String?
    @Flag(help: "Bulk: select every pending approval (required without a filter).") var all = false
    @Flag(help: "Bulk: show the count and five samples; change nothing.") var dryRun = false
    @Flag(help: "Bulk: do not ask for confirmation.") var yes = false
    @Option(help: "Who is recorded as acting (default: $BATON_ACTOR, else cli:$USER@<short host name>).") var actor: String?

    func validate() throws {
        let selection = try selection()
        if task != nil {
            if !selection.isEmpty || all || dryRun || yes {
                throw ValidationError(
                    "name one TASK, or select approvals by --agent/--tenant/--older-than/--all (a bulk approve), not both")
            }
            return
        }
        if payload != nil || edit != nil || id != nil {
            throw ValidationError("--payload, --edit and --id apply to one TASK: a bulk approve sends each task a plain approval")
        }
        if selection.isEmpty && !all {
            throw ValidationError("name a TASK, or select approvals by --agent, --tenant, --older-than, or --all")
        }
        if all && !selection.isEmpty { throw ValidationError("--all selects every pending approval: drop it or drop the filters") }
        if !dryRun && reason.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("a bulk approve must say why: add --reason R (recorded in the audit stream)")
        }
    }

    func selection() throws -> ApprovalSelection {
        do { return try ApprovalSelection(agent: agent, tenant: tenant, olderThan: olderThan) } catch let error as BatonError {
            throw ValidationError("--" + error.message)
        }
    }

    func run() async throws {
        let who = actor.flatMap { $0.isEmpty ? nil : $0 } ?? CLIActor.current()
        guard let task else { return try await runBulk(actor: who) }
        let editPatch = try edit.map { try JSONValue.parse(Array(try parsePayload($0, option: "--edit").utf8)) }
        let payloadValue = try payload.map { try JSONValue.parse(Array(try parsePayload($0).utf8)) }
        if editPatch == nil {
            let signal = TaskSignal(
                task: task, name: "approve", payloadJSON: payloadValue?.jsonString ?? "", id: id, actor: who, reason: reason)
            return try await sendSignal(signal, global: global)
        }
        let signal = try await withClient(global.connection) { client in
            try await client.approval(task: task, payload: payloadValue, edit: editPatch, id: id, actor: who, reason: reason)
        }
        try await sendSignal(signal, global: global)
    }

    func runBulk(actor: String) async throws {
        let printer = global.output.printer
        let selection = try selection()
        try await withClient(global.connection, publishing: !dryRun) { client in
            let items = try await client.pendingApprovals(selection)
            if dryRun {
                let report = DryRunReport(
                    action: "approve", filter: selection.description, count: items.count, samples: Array(items.prefix(5)))
                try printer.one(report, id: "approve") {
                    let head =
                        "dry run: would approve \(items.count) pending approval\(items.count == 1 ? "" : "s") (\(selection.description)); nothing changed"
                    let rows = report.samples.map { "  \($0.task.id)  \($0.task.agent)  waiting \(TextFormat.duration($0.ageSeconds))" }
                    return ([head] + rows).joined(separator: "\n")
                }
                return
            }
            if items.isEmpty {
                Terminal.note("no pending approvals match (\(selection.description)); nothing to approve")
                try printer.list([SignalReport](), id: \.task) { "" }
                return
            }
            try confirm("approve \(items.count) pending approval\(items.count == 1 ? "" : "s") (\(selection.description))?", yes: yes)
            let total = items.count
            let reports = try await client.approveAll(
                items.map(\.task.id), filter: selection.description, actor: actor, reason: reason
            ) { done in
                if done % 100 == 0 || done == total { Terminal.note("approve: \(done)/\(total)") }
            }
            let woke = reports.filter { $0.result == "woke" }
            try printer.list(printer.quiet ? woke : reports, id: \.task) {
                (reports.map { "\($0.task): \($0.result)" } + ["approve: \(woke.count) of \(total) woke"]).joined(separator: "\n")
            }
        }
    }
}

/// `baton reject TASK`.
struct RejectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reject",
        abstract: "Reject a task waiting for a decision (the signal 'reject'), or end a task parked in needs_review (cancelled).",
        discussion: """
            A task in needs_review (parked at a cap) ends cancelled, with actor and reason in its history and the audit \
            stream. Any other task gets the signal 'reject'. Exit 4 when the task does not exist, 5 when it already ended.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The task id.") var task: String
    @Option(help: "Why (recorded with the actor).") var reason: String = ""
    @Option(help: "A payload for the resumed step: JSON or @file.") var payload: String?
    @Option(help: "A dedupe id (default: a new id).") var id: String?

    func run() async throws {
        let payloadJSON = try parsePayload(payload)
        let printer = global.output.printer
        let actor = CLIActor.current()
        let why = reason.isEmpty ? "no reason given" : reason
        let reviewed: Bool = try await withClient(global.connection) { client in
            guard let outcome = try await client.rejectReview(task: task, reason: why, actor: actor) else { return false }
            try await runActions([task], noun: "task", printer: printer) { task in
                ActionReport(id: task, action: "reject", outcome: outcome, reason: why)
            }
            return true
        }
        if reviewed { return }
        let signal = TaskSignal(task: task, name: "reject", payloadJSON: payloadJSON, id: id, actor: actor, reason: reason)
        try await sendSignal(signal, global: global)
    }
}
