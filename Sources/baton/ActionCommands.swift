import ArgumentParser
import Baton
import Foundation

extension ActionReport {
    /// The exit code this outcome asks for: 0, 4 (not found), 5 (conflict) or 64 (usage: a fork needs `--step`).
    var exitCode: Int32 {
        switch result {
        case "usage": CLIExit.usage
        case "not_found": CLIExit.notFound
        case "conflict": CLIExit.conflict
        default: 0
        }
    }

    /// One line for people.
    func text(printer: Printer, noun: String) -> String {
        switch result {
        case "done":
            "\(id): \(action) done" + (status.map { " (now \(printer.status($0))" + (branch.map { " on branch \($0)" } ?? "") + ")" } ?? "")
                + (seq.map { " from the checkpoint of seq \($0)" } ?? "") + (step.map { ", next step \($0)" } ?? "")
        case "requested": "\(id): \(action) requested; the running step stops at its next boundary or lease renewal"
        case "not_found": "\(id): " + (message ?? "no such \(noun)")
        case "usage": "\(id): cannot \(action): " + (message ?? "a required option is missing")
        default:
            "\(id): cannot \(action): it is \(status.map(printer.status) ?? "in a state that forbids it")"
                + (message.map { " (\($0))" } ?? "")
        }
    }
}

/// Runs `action` on every target, prints the reports, and exits with the worst outcome (5 conflict over 4 not
/// found over 0). Failures are also written to stderr, so a text run shows them even with `-q`.
func runActions(
    _ targets: [String], noun: String, printer: Printer, _ action: (String) async throws -> ActionReport
) async throws {
    var reports: [ActionReport] = []
    for target in targets {
        let report = try await action(target)
        reports.append(report)
        if report.exitCode != 0 && (printer.format != .text || printer.quiet) {
            Terminal.error(report.text(printer: Printer(format: .text, quiet: false, color: false), noun: noun))
        }
    }
    let succeeded = reports.filter { $0.exitCode == 0 }
    try printer.list(printer.quiet ? succeeded : reports, id: \.id) {
        reports.map { $0.text(printer: printer, noun: noun) }.joined(separator: "\n")
    }
    if let worst = reports.map(\.exitCode).max(), worst != 0 { throw ExitCode(worst) }
}

/// The arguments of `cancel`, `pause` and `resume`.
struct TaskActionArguments: ParsableArguments {
    @Argument(help: "One or more task ids.")
    var tasks: [String]

    @Option(help: "Why (recorded with the actor in the task's history and the audit stream).")
    var reason: String = ""

    @Option(help: "Who is recorded as acting (default: $BATON_ACTOR, else cli:$USER@<short host name>).")
    var actor: String?

    func validate() throws {
        if tasks.isEmpty { throw ValidationError("name at least one task") }
    }
}

/// Runs one of cancel, pause, resume over the tasks of `arguments`.
func runTaskAction(_ action: String, _ arguments: TaskActionArguments, global: GlobalOptions) async throws {
    let printer = global.output.printer
    let actor = arguments.actor.flatMap { $0.isEmpty ? nil : $0 } ?? CLIActor.current()
    let reason = arguments.reason.isEmpty ? "no reason given" : arguments.reason
    // resume republishes the task's next step at once: it needs RabbitMQ.
    try await withClient(global.connection, publishing: action == "resume") { client in
        try await runActions(arguments.tasks, noun: "task", printer: printer) { task in
            let outcome = try await client.act(action, task: task, reason: reason, actor: actor)
            return ActionReport(id: task, action: action, outcome: outcome, reason: reason)
        }
    }
}

/// `baton cancel TASK…`.
struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel tasks: a durable flag, seen at the next step boundary (or lease renewal).",
        discussion: "Exit 4 when a task does not exist, 5 when its state forbids it (e.g. it already finished).")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var arguments: TaskActionArguments

    func run() async throws { try await runTaskAction("cancel", arguments, global: global) }
}

/// `baton pause TASK…`.
struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Pause tasks: they hold at their next step boundary until resumed.",
        discussion: "Exit 4 when a task does not exist, 5 when its state forbids it.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var arguments: TaskActionArguments

    func run() async throws { try await runTaskAction("pause", arguments, global: global) }
}

/// `baton resume TASK…`.
struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Resume paused tasks.", discussion: "Exit 4 when a task does not exist, 5 when it is not paused.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var arguments: TaskActionArguments

    func run() async throws { try await runTaskAction("resume", arguments, global: global) }
}
