import ArgumentParser
import Baton
import Foundation

/// `baton fork TASK --from-seq N --reason R [--step S] [--actor A]`.
struct ForkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fork", abstract: "Start a new branch of a task from one of its kept checkpoints; the old path stays in the history.",
        discussion: """
            The task (any status but running) goes back to the checkpoint after step seq N, on branch n+1, and runs again from \
            the step that followed that checkpoint (or --step). Budget counters are kept. Exit 4 when the task or the \
            checkpoint does not exist (the message names the kept seqs), 5 while a step runs, 64 when the history does not \
            name the step to resume and --step is missing.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The task id.")
    var task: String

    @Option(name: .customLong("from-seq"), help: "The seq of the kept checkpoint the new branch starts from.")
    var fromSeq: Int64

    @Option(help: "Why (required; recorded with the actor in the task's history and the audit stream).")
    var reason: String

    @Option(help: "The step to run first on the new branch (default: the one that followed the checkpoint).")
    var step: String?

    @Option(help: "Who is recorded as acting (default: $BATON_ACTOR, else cli:$USER@<short host name>).")
    var actor: String?

    func validate() throws {
        if fromSeq < 0 { throw ValidationError("--from-seq must be 0 or more") }
        if reason.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--reason must say why") }
        if let step, step.isEmpty { throw ValidationError("--step must not be empty") }
    }

    func run() async throws {
        let printer = global.output.printer
        let actor = actor.flatMap { $0.isEmpty ? nil : $0 } ?? CLIActor.current()
        try await withClient(global.connection, publishing: true) { client in
            try await runActions([task], noun: "task", printer: printer) { task in
                try await client.fork(task: task, fromSeq: fromSeq, step: step, reason: reason, actor: actor)
            }
        }
    }
}
