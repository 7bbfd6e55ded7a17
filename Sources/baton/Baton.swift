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
        BenchCommand.self,
    ]

    static let configuration = CommandConfiguration(
        commandName: "baton",
        abstract: "Durable, budgeted, long-running AI-agent tasks on RabbitMQ and Redis.",
        subcommands: subcommands
    )

    /// Sets up logging (stderr only, so stdout stays for results), then runs the chosen subcommand.
    static func main() async {
        CLILogging.bootstrap()
        await main(nil)
    }
}
