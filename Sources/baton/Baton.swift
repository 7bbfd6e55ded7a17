import ArgumentParser
import Foundation
import Logging

/// The `baton` executable: one command with subcommands (DESIGN.md §7).
@main
struct BatonCommand: AsyncParsableCommand {
    /// Every subcommand, one per line: adding a command is adding its line here.
    static let subcommands: [any ParsableCommand.Type] = [
        ServicesCommand.self,
        WorkerCommand.self,
        SubmitCommand.self,
        StatusCommand.self,
        ListCommand.self,
        HistoryCommand.self,
        CheckpointCommand.self,
        CancelCommand.self,
        PauseCommand.self,
        ResumeCommand.self,
        ForkCommand.self,
        BudgetCommand.self,
        SignalCommand.self,
        WatchCommand.self,
        StatsCommand.self,
        InboxCommand.self,
        ApproveCommand.self,
        RejectCommand.self,
        DeadCommand.self,
        WorkersCommand.self,
        QueuesCommand.self,
        AuditCommand.self,
        ServeCommand.self,
        DoctorCommand.self,
        BenchCommand.self,
        VerifyCommand.self,
        DemoCommand.self,
    ]

    static let configuration = CommandConfiguration(
        commandName: "baton",
        abstract: "Durable, budgeted, long-running AI-agent tasks on RabbitMQ and Redis.",
        discussion: """
            Exit codes: 0 ok, 1 the operation failed, 2 connection or configuration error, 3 a --wait ended in a status other than succeeded, 4 not found, 5 conflict (the task's state forbids it), 64 usage.
            """,
        subcommands: subcommands
    )

    /// Sets up logging (stderr only, so stdout stays for results), runs the chosen subcommand, and maps the
    /// errors of the server clients to the exit codes of DESIGN.md §7.
    static func main() async {
        Allocator.prepare()
        CLILogging.bootstrap()
        do {
            var command = try parseAsRoot(nil)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: CLIExit.map(error))
        }
    }
}
