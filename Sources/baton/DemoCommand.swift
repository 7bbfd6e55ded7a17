import ArgumentParser
import Baton
import Foundation

/// `baton demo`: the five-minute tour of what Baton survives (see ``Demo``).
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Three workers, 20 report tasks, one worker SIGKILLed mid-run: live status, then a summary (scripted model stand-in).")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Report tasks to submit.") var tasks: Int = 20
    @Option(help: "Documents per report.") var documents: Int = 8

    func validate() throws {
        guard (1...200).contains(tasks), (1...1000).contains(documents) else {
            throw ValidationError("--tasks 1…200 and --documents 1…1000")
        }
    }

    func run() async throws {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        let resolved =
            FileManager.default.fileExists(atPath: executable)
            ? executable : (ProcessInfo.processInfo.environment["BATON_EXECUTABLE"] ?? executable)
        var demo = Demo(
            amqpURL: connection.amqpURL, redisURL: connection.redisURL, executable: resolved,
            directory: FileManager.default.currentDirectoryPath + "/.baton/demo")
        demo.tasks = tasks
        demo.documents = documents
        let interactive = isatty(1) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
        do {
            try await demo.run(print: { Swift.print($0) }, interactive: interactive)
        } catch let error as BatonError {
            Terminal.error(error.message)
            throw ExitCode(1)
        } catch {
            Terminal.error("\(error)")
            throw ExitCode(2)
        }
    }
}
