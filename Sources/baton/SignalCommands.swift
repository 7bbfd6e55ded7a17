import ArgumentParser
import Baton
import Foundation

/// What one signal did, as printed (`-o json`: this object).
struct SignalReport: Encodable {
    var task: String
    var signal: String
    var id: String
    /// `woke`, `stored`, `duplicate`, `not_found`, `terminal` or `mailbox_full`.
    var result: String
    /// The task's status after the signal (or the status that refused it).
    var status: String?
    var actor: String
    var reason: String?

    enum CodingKeys: String, CodingKey {
        case task = "task_id"
        case signal, id, result, status, actor, reason
    }
}

/// Sends `signal` through the client, prints what happened, and exits 4 (no such task), 5 (the task ended)
/// or 1 (mailbox full) when it was not taken.
func sendSignal(_ signal: TaskSignal, global: GlobalOptions) async throws {
    let printer = global.output.printer
    try await withClient(global.connection, publishing: true) { client in
        let outcome = try await client.signal(signal)
        var report = SignalReport(
            task: signal.task, signal: signal.name, id: signal.id, result: "", status: nil, actor: signal.actor,
            reason: signal.reason.isEmpty ? nil : signal.reason)
        var text: String
        var exit: Int32 = 0
        switch outcome {
        case .woke:
            (report.result, report.status) = ("woke", "queued")
            text = "\(signal.task): signal '\(signal.name)' delivered; the task woke up (now \(printer.status("queued")))"
        case .stored(let status):
            (report.result, report.status) = ("stored", status)
            text =
                "\(signal.task): signal '\(signal.name)' kept in the task's mailbox (it is \(printer.status(status)), not waiting for it yet); a wait for it consumes it at once"
        case .duplicate(let status):
            (report.result, report.status) = ("duplicate", status)
            text = "\(signal.task): a signal with id '\(signal.id)' was already received; nothing changed"
        case .notFound:
            report.result = "not_found"
            text = "\(signal.task): no such task"
            exit = CLIExit.notFound
        case .terminal(let status):
            (report.result, report.status) = ("terminal", status)
            text = "\(signal.task): cannot signal: the task already ended (\(printer.status(status)))"
            exit = CLIExit.conflict
        case .mailboxFull(let cap):
            report.result = "mailbox_full"
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
func parsePayload(_ text: String?) throws -> String {
    guard var text else { return "" }
    if text.hasPrefix("@") {
        guard let data = FileManager.default.contents(atPath: String(text.dropFirst())) else {
            throw ValidationError("cannot read the payload file \(text.dropFirst())")
        }
        text = String(decoding: data, as: UTF8.self)
    }
    do {
        return try JSONValue.parse(Array(text.utf8)).jsonString
    } catch {
        throw ValidationError(
            "--payload is not valid JSON (\(error)); quote strings, e.g. --payload '\"yes\"' or --payload '{\"ok\":true}'")
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

/// `baton approve TASK`.
struct ApproveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve", abstract: "Approve a task waiting for a decision (the signal 'approve', with actor and reason).",
        discussion: "Exit 4 when the task does not exist, 5 when it already ended.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The task id.") var task: String
    @Option(help: "A payload for the resumed step: JSON or @file.") var payload: String?
    @Option(name: [.long, .customLong("comment")], help: "Why (recorded with the actor).") var reason: String = ""
    @Option(help: "A dedupe id (default: a new id).") var id: String?

    func run() async throws {
        let signal = TaskSignal(
            task: task, name: "approve", payloadJSON: try parsePayload(payload), id: id, actor: CLIActor.current(), reason: reason)
        try await sendSignal(signal, global: global)
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
