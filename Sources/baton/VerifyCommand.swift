import ArgumentParser
import Baton
import Foundation

/// `baton verify --run ID`: the end-of-run checks of a verification run (docs/reliability.md).
struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Check every task of a run: terminal once, effects once, no stale writes, budgets exact.",
        discussion: """
            The run's tasks are the ones submitted with the label run=<ID> and their children. Effects are counted from \
            the run's effects sink (--effects, default $BATON_EFFECTS_DIR/<ID>.effects.jsonl), never from Redis. Prints \
            submitted / succeeded / dead-lettered / budget_exceeded / cancelled / lost / duplicate-effects / stale-writes / \
            budget-mismatch and every violation (task id and what); -o json: one object. Exit 1 on any violation, 4 when \
            the run has no tasks.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "The run id (the label run=<ID> of its tasks; default $BATON_RUN).")
    var run: String?

    @Option(help: ArgumentHelp("The run's effects sink (default $BATON_EFFECTS_DIR/<run>.effects.jsonl).", valueName: "path"))
    var effects: String?

    @Option(
        name: .customLong("queue"),
        help: ArgumentHelp(
            "A step queue the run used on its own (repeatable): it must be empty afterwards (no orphaned step message).",
            valueName: "name"))
    var queues: [String] = []

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let run = run ?? environment["BATON_RUN"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("name the run to verify: --run ID (or set BATON_RUN)")
        }
        guard TaskID.isValidName(run) else {
            throw ValidationError("--run '\(run)' is not a run id: 1–100 letters, digits, '-', '_' or '.'")
        }
        let path =
            effects
            ?? environment[EffectsSink.directoryEnvironment].flatMap { $0.isEmpty ? nil : EffectsSink.path(directory: $0, run: run) }
        if let effects, !FileManager.default.fileExists(atPath: effects) {
            Terminal.error("no effects sink at \(effects): check --effects")
            throw ExitCode(CLIExit.notFound)
        }
        let printer = global.output.printer
        let configuration = try await global.connection.load()
        let report = try await withClient(global.connection) { client in
            let snapshot = try await client.queries.runSnapshot(run: run, effectsPath: path)
            guard !snapshot.roots.isEmpty else {
                Terminal.error("run '\(run)' has no tasks: submit them with the label run=\(run) (--label run=\(run))")
                throw ExitCode(CLIExit.notFound)
            }
            var report = RunVerifier.verify(snapshot)
            if !queues.isEmpty {
                let rows = try await RunVerifier.inspectQueues(Array(Set(queues)).sorted(), amqpURL: configuration.amqpURL)
                RunVerifier.checkQueues(rows, into: &report)
            }
            return report
        }
        try printer.one(report, id: run) { Self.text(report, sink: path) }
        if !report.passed { throw ExitCode(CLIExit.failed) }
    }

    static func text(_ report: RunReport, sink: String?) -> String {
        var lines = ["run \(report.run): " + (report.passed ? "PASSED" : "FAILED (\(report.violations.count) violations)")]
        lines.append(report.figures)
        lines.append(
            "effects: \(report.effectsApplied) applied, \(report.effectsReplayed) replayed, \(report.effectsFenced) fenced"
                + (sink.map { " (sink \($0))" } ?? " (no sink: set BATON_EFFECTS_DIR or --effects)"))
        if report.historyTruncated > 0 {
            lines.append("history checks skipped for \(report.historyTruncated) task(s) with a capped history")
        }
        for violation in report.violations { lines.append("  \(violation.task): \(violation.kind): \(violation.message)") }
        return lines.joined(separator: "\n")
    }
}
