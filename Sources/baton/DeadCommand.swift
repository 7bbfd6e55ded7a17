import ArgumentParser
import Baton
import Foundation

/// `baton dead list|show|redrive|discard`: the dead letters kept in Redis.
struct DeadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead", abstract: "Inspect, redrive and discard dead letters.",
        subcommands: [List.self, Show.self, Redrive.self, Discard.self])

    /// `baton dead list`.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters, newest first.")

        @OptionGroup var global: GlobalOptions

        @Option(
            help: "Only this reason (retries_exhausted, permanent_error, delivery_limit, malformed, unknown_agent, stale_seq, oversized).")
        var reason: String?

        @Option(help: "Only this agent.")
        var agent: String?

        @Option(help: "At most this many (1…10000).")
        var limit: Int = 100

        func validate() throws {
            guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be from 1 to 10000") }
        }

        func run() async throws {
            let printer = global.output.printer
            try await withClient(global.connection) { client in
                // Filters apply after the read: fetch more so a filtered page is still full.
                let fetched = try await client.queries.deadLetters(limit: reason == nil && agent == nil ? limit : min(10_000, limit * 10))
                let letters = Array(
                    fetched.filter { letter in
                        (reason == nil || letter.reason == reason) && (agent == nil || letter.agent == agent)
                    }
                    .prefix(limit))
                try printer.list(letters, id: \.id) { Self.render(letters, printer: printer) }
                if printer.format == .text && !printer.quiet && letters.isEmpty { Terminal.note("no dead letters match") }
            }
        }

        static func render(_ letters: [DeadLetterView], printer: Printer, now: Date = Date()) -> String {
            guard !letters.isEmpty else { return "" }
            let rows: [[TextFormat.Cell]] = letters.map { letter in
                [
                    TextFormat.Cell(letter.id), TextFormat.Cell(letter.reason, shown: printer.paint(letter.reason, "31")),
                    TextFormat.Cell(letter.agent ?? "-"), TextFormat.Cell(letter.step ?? "-"), TextFormat.Cell(letter.taskID ?? "-"),
                    TextFormat.Cell(letter.attempts.map(String.init) ?? "-"), TextFormat.Cell(letter.bucket ?? "-"),
                    TextFormat.Cell(TextFormat.ago(letter.deadAt, now: now)), TextFormat.Cell(TextFormat.clip(letter.error, 60)),
                ]
            }
            return TextFormat.table(
                ["ID", "REASON", "AGENT", "STEP", "TASK", "ATTEMPTS", "BUCKET", "DEAD", "ERROR"], rows, printer: printer)
        }
    }

    /// `baton dead show ID`.
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one dead letter with its message body.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The dead letter's id.")
        var id: String

        func run() async throws {
            let printer = global.output.printer
            try await withClient(global.connection) { client in
                guard let letter = try await client.queries.deadLetter(id) else {
                    Terminal.error("no dead letter '\(id)'")
                    throw ExitCode(CLIExit.notFound)
                }
                try printer.one(letter, id: letter.id) { Self.render(letter, printer: printer) }
            }
        }

        static func render(_ letter: DeadLetterView, printer: Printer) -> String {
            var rows: [(String, String?)] = [
                ("reason", printer.paint(letter.reason, "31")), ("error", letter.error), ("field", letter.field), ("task", letter.taskID),
                ("agent", letter.agent), ("step", letter.step), ("seq", letter.seq.map(String.init)),
                ("branch", letter.branch.map(String.init)), ("attempts", letter.attempts.map(String.init)), ("bucket", letter.bucket),
                ("worker", letter.worker), ("dead at", letter.deadAt.isEmpty ? nil : "\(letter.deadAt) (\(TextFormat.ago(letter.deadAt)))"),
            ]
            let body = (try? JSONValue.parse(Array(letter.body.utf8))).flatMap { value -> String? in
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) }
            }
            rows.append(("body", body ?? letter.body))
            let shown = rows.compactMap { name, value in value.map { (name, $0) } }
            let width = shown.map(\.0.count).max() ?? 0
            return
                ([letter.id] + shown.map { name, value in "  " + name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value })
                .joined(separator: "\n")
        }
    }

    /// The arguments of `redrive` and `discard`.
    struct Targets: ParsableArguments {
        @Argument(help: "One or more dead-letter ids (see `baton dead list`).")
        var ids: [String]

        @Option(help: "Why (required; recorded in the audit stream and, for a redrive, in the task's history).")
        var reason: String

        func validate() throws {
            if ids.isEmpty { throw ValidationError("name at least one dead letter") }
            if reason.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--reason must say why") }
        }
    }

    /// `baton dead redrive ID… --reason R`.
    struct Redrive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run dead-lettered tasks again on a new branch from their last good checkpoint (or republish a dead submit).",
            discussion: "Exit 4 when a dead letter does not exist, 5 when its task's state forbids a redrive.")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var targets: Targets

        func run() async throws {
            let printer = global.output.printer
            let actor = CLIActor.current()
            try await withClient(global.connection, publishing: true) { client in
                try await runActions(targets.ids, noun: "dead letter", printer: printer) { id in
                    let outcome = try await client.redrive(deadLetter: id, reason: targets.reason, actor: actor)
                    return ActionReport(id: id, action: "redrive", outcome: outcome, reason: targets.reason)
                }
            }
        }
    }

    /// `baton dead discard ID… --reason R`.
    struct Discard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Discard dead letters (their tasks stay dead_lettered).", discussion: "Exit 4 when a dead letter does not exist.")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var targets: Targets

        func run() async throws {
            let printer = global.output.printer
            let actor = CLIActor.current()
            try await withClient(global.connection) { client in
                try await runActions(targets.ids, noun: "dead letter", printer: printer) { id in
                    let outcome = try await client.discard(deadLetter: id, reason: targets.reason, actor: actor)
                    return ActionReport(id: id, action: "discard", outcome: outcome, reason: targets.reason)
                }
            }
        }
    }
}
