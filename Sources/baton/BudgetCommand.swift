import ArgumentParser
import Baton
import Foundation

/// `baton budget TASK --raise max_cost_usd=+2,max_steps=+50 --reason R [--actor A]`.
struct BudgetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "budget", abstract: "Raise a task's limits; a task parked in needs_review resumes.",
        discussion: """
            --raise takes relative (+n) or absolute (n) values: max_cost_usd (dollars), max_tokens, max_steps, \
            max_tool_calls, max_handoffs, max_attempts, deadline (+2h or an ISO-8601 time). The change is one atomic step, \
            recorded with actor and reason in the task's history (budget_raised) and the audit stream. A needs_review task \
            resumes at the step it was parked on. A running step keeps the limits it was claimed with until its next \
            boundary. Exit 4 when the task does not exist, 5 when it ended or when the new limits are still reached (the \
            message names the limit).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The task id.")
    var task: String

    @Option(help: "The new limits: max_cost_usd=+2,max_steps=+50 (+n relative, n absolute).")
    var raise: String

    @Option(help: "Why (required; recorded with the actor in the task's history and the audit stream).")
    var reason: String

    @Option(help: "Who is recorded as acting (default: $BATON_ACTOR, else cli:$USER@<short host name>).")
    var actor: String?

    func validate() throws {
        if reason.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--reason must say why") }
        do {
            _ = try BudgetRaise(parsing: raise)
        } catch {
            throw ValidationError("--raise: \(error.message)")
        }
    }

    func run() async throws {
        let printer = global.output.printer
        let actor = actor.flatMap { $0.isEmpty ? nil : $0 } ?? CLIActor.current()
        let raise = try BudgetRaise(parsing: raise)
        try await withClient(global.connection, publishing: true) { client in
            try await runActions([task], noun: "task", printer: printer) { task in
                try await client.raiseBudget(task: task, raise, reason: reason, actor: actor)
            }
        }
    }
}
