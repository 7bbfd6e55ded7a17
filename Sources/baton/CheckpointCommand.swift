import ArgumentParser
import Baton
import Foundation

/// `baton checkpoint TASK [--seq N]`: the task's state as committed after a step.
struct CheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint", abstract: "Print a task's checkpoint (its state after a committed step), the latest by default.",
        discussion: """
            Text: the state as indented JSON. -o json / jsonl: {"task_id", "seq", "state"} on one line. Exit 4 when the task \
            or that checkpoint does not exist (only the last few checkpoints are kept: limits.checkpoints_kept).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The task id.")
    var task: String

    @Option(help: "The seq of the checkpoint (default: the latest).")
    var seq: Int64?

    func validate() throws {
        if let seq, seq < 0 { throw ValidationError("--seq must be ≥ 0") }
    }

    struct Output: Encodable {
        var taskID: String
        var seq: Int64
        var state: JSONValue

        enum CodingKeys: String, CodingKey {
            case taskID = "task_id"
            case seq, state
        }
    }

    func run() async throws {
        let printer = global.output.printer
        try await withClient(global.connection) { client in
            guard let view = try await client.queries.task(task) else {
                Terminal.error("no task '\(task)'")
                throw ExitCode(CLIExit.notFound)
            }
            guard let checkpoint = try await client.queries.checkpoint(task, seq: seq) else {
                let kept = client.store.settings.checkpointsKept
                Terminal.error(
                    "task '\(task)' has no checkpoint at seq \(seq ?? view.seq): its latest is seq \(view.seq) and only the last \(kept) are kept"
                )
                throw ExitCode(CLIExit.notFound)
            }
            let state = (try? JSONValue.parse(Array(checkpoint.json.utf8))) ?? .string(checkpoint.json)
            let output = Output(taskID: task, seq: checkpoint.seq, state: state)
            try printer.one(output, id: task) {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                return (try? encoder.encode(state)).map { String(decoding: $0, as: UTF8.self) } ?? checkpoint.json
            }
        }
    }
}
