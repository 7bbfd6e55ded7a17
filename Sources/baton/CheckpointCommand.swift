import ArgumentParser
import Baton
import Foundation

/// `baton checkpoint TASK [--seq N]`: the task's state as committed after a step.
struct CheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint", abstract: "Print a task's checkpoint (its state after a committed step), the latest by default.",
        discussion: """
            Text: the state as indented JSON. -o json / jsonl: {"task_id", "seq", "state"} on one line. --diff A..B: the \
            RFC 7396 merge patch from checkpoint A to B ({"task_id", "from", "to", "patch"}). Exit 4 when the task or a \
            checkpoint does not exist (only the last few checkpoints are kept: limits.checkpoints_kept).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The task id.")
    var task: String

    @Option(help: "The seq of the checkpoint (default: the latest).")
    var seq: Int64?

    @Option(
        help: ArgumentHelp(
            "Print what changed from checkpoint A to B as an RFC 7396 merge patch (B defaults to the latest).", valueName: "A..B"))
    var diff: String?

    func validate() throws {
        if let seq, seq < 0 { throw ValidationError("--seq must be ≥ 0") }
        if let diff, Self.range(diff) == nil { throw ValidationError("--diff must look like 3..7 (or 3.. for 3 to the latest)") }
        if diff != nil && seq != nil { throw ValidationError("--diff names its seqs itself: drop --seq") }
    }

    /// `3..7` → (3, 7); `3..` → (3, nil).
    static func range(_ text: String) -> (from: Int64, to: Int64?)? {
        let parts = text.components(separatedBy: "..")
        guard parts.count == 2, let from = Int64(parts[0]), from >= 0 else { return nil }
        if parts[1].isEmpty { return (from, nil) }
        guard let to = Int64(parts[1]), to >= 0 else { return nil }
        return (from, to)
    }

    struct DiffOutput: Encodable {
        var taskID: String
        var from: Int64
        var to: Int64
        var patch: JSONValue

        enum CodingKeys: String, CodingKey {
            case taskID = "task_id"
            case from, to, patch
        }
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
                Terminal.error(CLIExit.noTask(task))
                throw ExitCode(CLIExit.notFound)
            }
            func load(_ seq: Int64?) async throws -> (seq: Int64, state: JSONValue) {
                guard let checkpoint = try await client.queries.checkpoint(task, seq: seq) else {
                    let kept = client.store.settings.checkpointsKept
                    Terminal.error(
                        "task '\(task)' has no checkpoint at seq \(seq ?? view.seq): its latest is seq \(view.seq) and only the last \(kept) are kept"
                    )
                    throw ExitCode(CLIExit.notFound)
                }
                return (checkpoint.seq, (try? JSONValue.parse(Array(checkpoint.json.utf8))) ?? .string(checkpoint.json))
            }
            if let diff, let range = Self.range(diff) {
                let from = try await load(range.from)
                let to = try await load(range.to)
                let output = DiffOutput(taskID: task, from: from.seq, to: to.seq, patch: from.state.mergePatch(to: to.state))
                try printer.one(output, id: task) { Self.pretty(output.patch) }
                return
            }
            let checkpoint = try await load(seq)
            let state = checkpoint.state
            let output = Output(taskID: task, seq: checkpoint.seq, state: state)
            try printer.one(output, id: task) { Self.pretty(state) }
        }
    }

    /// Indented JSON with sorted keys.
    static func pretty(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? value.jsonString
    }
}
