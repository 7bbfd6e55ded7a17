import ArgumentParser
import Baton
import Foundation

/// `baton dead list|show|redrive|discard`: the dead letters kept in Redis.
struct DeadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead", abstract: "Inspect, redrive and discard dead letters.",
        subcommands: [List.self, Show.self, Export.self, Redrive.self, Discard.self])

    /// `baton dead list`.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List dead letters, newest first, or count them by group.",
            discussion: """
                With --group-by: one row per group with its count, first and last seen and the newest letter's error \
                (-o json: {"items": [{"group_by", "key", "count", "first_seen", "last_seen", "sample", …}]}), largest first. \
                A fingerprint groups letters of the same agent, step, failure bucket and error message once digits, hex ids, \
                UUIDs, quoted strings and task ids are masked.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var filters: DeadFilterOptions

        @Option(
            name: [.customLong("reason"), .customLong("dead-reason")],
            help: "Only this reason (retries_exhausted, permanent_error, delivery_limit, malformed, unknown_agent, stale_seq, oversized).")
        var reason: String?

        @Option(name: .customLong("group-by"), help: "Count by fingerprint, agent, step, bucket or reason instead of listing.")
        var groupBy: String?

        @Option(help: "At most this many letters or groups (1…10000).")
        var limit: Int = 100

        func validate() throws {
            guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be from 1 to 10000") }
            if let groupBy, DeadLetterGrouping(rawValue: groupBy) == nil {
                throw ValidationError("--group-by must be one of fingerprint, agent, step, bucket, reason (got '\(groupBy)')")
            }
        }

        func run() async throws {
            let printer = global.output.printer
            let filter = try filters.filter(reason: reason)
            try await withClient(global.connection) { client in
                if let grouping = groupBy.flatMap(DeadLetterGrouping.init(rawValue:)) {
                    let groups = Array(try await client.queries.deadLetterGroups(by: grouping, filter: filter).prefix(limit))
                    try printer.list(groups, id: \.key) { Self.render(groups, printer: printer) }
                    if printer.format == .text && !printer.quiet && groups.isEmpty { Terminal.note("no dead letters match") }
                    return
                }
                let letters =
                    filter.isEmpty
                    ? try await client.queries.deadLetters(limit: limit)
                    : try await client.queries.deadLetters(matching: filter, limit: limit).items
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

        static func render(_ groups: [DeadLetterGroup], printer: Printer, now: Date = Date()) -> String {
            guard let first = groups.first else { return "" }
            let byFingerprint = first.groupBy == DeadLetterGrouping.fingerprint.rawValue
            let rows: [[TextFormat.Cell]] = groups.map { group in
                var row = [TextFormat.Cell(group.key), TextFormat.Cell(String(group.count))]
                if byFingerprint {
                    row += [TextFormat.Cell(group.agent ?? "-"), TextFormat.Cell(group.step ?? "-"), TextFormat.Cell(group.bucket ?? "-")]
                }
                row += [
                    TextFormat.Cell(TextFormat.ago(group.firstSeen, now: now)), TextFormat.Cell(TextFormat.ago(group.lastSeen, now: now)),
                    TextFormat.Cell(TextFormat.clip(group.sample, 60)),
                ]
                return row
            }
            let header =
                [first.groupBy.uppercased(), "COUNT"] + (byFingerprint ? ["AGENT", "STEP", "BUCKET"] : [])
                + ["FIRST SEEN", "LAST SEEN", "SAMPLE"]
            return TextFormat.table(header, rows, printer: printer)
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
                ("worker", letter.worker), ("fingerprint", letter.fingerprint),
                ("dead at", letter.deadAt.isEmpty ? nil : "\(letter.deadAt) (\(TextFormat.ago(letter.deadAt)))"),
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

    /// What `redrive` and `discard` act on: ids, or a filter (a bulk action), and why.
    struct Targets: ParsableArguments {
        @Argument(help: "Dead-letter ids (see `baton dead list`); or select by the filters below.")
        var ids: [String] = []

        @OptionGroup var filters: DeadFilterOptions

        @Option(
            name: .customLong("dead-reason"),
            help: "Only letters with this dead-letter reason (retries_exhausted, permanent_error, delivery_limit, malformed, …).")
        var deadReason: String?

        @Flag(help: "Select every dead letter (required for a bulk action without a filter).")
        var all = false

        @Option(help: "Why (required; recorded in the audit stream and, for a redrive, in the task's history).")
        var reason: String

        @Option(help: "Who is recorded as acting (default: $BATON_ACTOR, else cli:$USER@<short host name>).")
        var actor: String?

        @Flag(name: .customLong("dry-run"), help: "Show how many letters would be affected and five of them; change nothing.")
        var dryRun = false

        @Flag(help: "Do not ask before a bulk action (required when stdin is not a terminal).")
        var yes = false

        var isBulk: Bool { ids.isEmpty }

        func validate() throws {
            if reason.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--reason must say why") }
            let filter = try filters.filter(reason: deadReason)
            if !ids.isEmpty && (!filter.isEmpty || all) {
                throw ValidationError("name dead-letter ids or select by filters (--agent, --step, …, --all), not both")
            }
            if ids.isEmpty && filter.isEmpty && !all {
                throw ValidationError(
                    "name dead-letter ids, or select by --agent, --step, --bucket, --dead-reason, --fingerprint or --since; "
                        + "to act on every dead letter pass --all")
            }
            if all && !filter.isEmpty { throw ValidationError("--all selects every dead letter: drop it or drop the filters") }
        }

        /// The selection's filter (validated before `run`, so this does not throw in practice).
        func filter() throws -> DeadLetterFilter { try filters.filter(reason: deadReason) }
        var effectiveActor: String { actor.flatMap { $0.isEmpty ? nil : $0 } ?? CLIActor.current() }
    }

    /// `baton dead redrive ID…|--filter… --reason R`.
    struct Redrive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run dead-lettered tasks again on a new branch from their last good checkpoint (or republish a dead submit).",
            discussion: """
                Select by ids, or by filters (--agent, --step, --bucket, --dead-reason, --fingerprint, --since) or --all; \
                --dry-run previews the count and five letters. --patch applies an RFC 7396 JSON merge patch to each task's \
                input first (recorded in the redriven event with the input before it). Exit 4 when a named dead letter does \
                not exist, 5 when a task's state forbids a redrive.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var targets: Targets

        @Option(
            name: [.customLong("patch"), .customLong("patch-input")],
            help: ArgumentHelp("An RFC 7396 JSON merge patch for the task input: JSON or @file.", valueName: "json"))
        var patch: String?

        func validate() throws { _ = try patchValue() }

        func patchValue() throws -> JSONValue? {
            guard var text = patch else { return nil }
            if text.hasPrefix("@") {
                guard let data = FileManager.default.contents(atPath: String(text.dropFirst())) else {
                    throw ValidationError("cannot read the patch file \(text.dropFirst())")
                }
                text = String(decoding: data, as: UTF8.self)
            }
            do { return try JSONValue.parse(Array(text.utf8)) } catch { throw ValidationError("--patch is not valid JSON: \(error)") }
        }

        func run() async throws {
            let patch = try patchValue()
            try await runDeadAction("redrive", targets: targets, global: global, publishing: true) { client, id in
                try await client.redrive(deadLetter: id, reason: targets.reason, actor: targets.effectiveActor, patch: patch, audit: false)
            }
        }
    }

    /// `baton dead discard ID…|--filter… --reason R`.
    struct Discard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Discard dead letters (their tasks stay dead_lettered).",
            discussion: """
                Select by ids, or by filters (--agent, --step, --bucket, --dead-reason, --fingerprint, --since) or --all; \
                --dry-run previews the count and five letters. Exit 4 when a named dead letter does not exist.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var targets: Targets

        func run() async throws {
            try await runDeadAction("discard", targets: targets, global: global, publishing: false) { client, id in
                try await client.discard(deadLetter: id, reason: targets.reason, actor: targets.effectiveActor, audit: false)
            }
        }
    }
}

extension DeadCommand {
    /// `baton dead export [filters]`: the selected dead letters, each with its body, one JSON object a line.
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the dead letters the filters select as JSONL (one dead-letter view a line, with its body), newest first.",
            discussion: "Always JSONL on stdout, whatever -o says: redirect it to a file (`baton dead export --agent a > a.jsonl`).")

        @OptionGroup var global: GlobalOptions
        @OptionGroup var filters: DeadFilterOptions

        @Option(name: [.customLong("reason"), .customLong("dead-reason")], help: "Only this reason (e.g. retries_exhausted).")
        var reason: String?

        @Option(help: "At most this many (default: all that match).")
        var limit: Int?

        func validate() throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        }

        func run() async throws {
            let filter = try filters.filter(reason: reason)
            try await withClient(global.connection) { client in
                let letters = try await client.queries.deadLetters(matching: filter, limit: limit).items
                for letter in letters { print(try JSONCoding.string(letter)) }
                Terminal.note("exported \(letters.count) dead letter\(letters.count == 1 ? "" : "s") (\(filter.description))")
            }
        }
    }
}

/// The filters of `dead list`, `redrive` and `discard` (the reason filter is added by each: `--reason` is the
/// why of a redrive).
struct DeadFilterOptions: ParsableArguments {
    @Option(help: "Only this agent.")
    var agent: String?

    @Option(help: "Only this step.")
    var step: String?

    @Option(help: "Only this failure bucket (e.g. provider_5xx).")
    var bucket: String?

    @Option(help: "Only this fingerprint (see `baton dead list --group-by fingerprint`).")
    var fingerprint: String?

    @Option(help: ArgumentHelp("Only letters taken in within this long (e.g. 30m, 24h, 7d).", valueName: "duration"))
    var since: String?

    func validate() throws {
        if let since, DurationText.parse(since) == nil { throw ValidationError("--since must be a duration such as 30m, 24h or 7d") }
    }

    func filter(reason: String?) throws -> DeadLetterFilter {
        func nonEmpty(_ value: String?) -> String? { value.flatMap { $0.isEmpty ? nil : $0 } }
        var since: Int64?
        if let text = self.since {
            guard let duration = DurationText.parse(text) else {
                throw ValidationError("--since must be a duration such as 30m, 24h or 7d")
            }
            since = duration.wholeMilliseconds
        }
        return DeadLetterFilter(
            agent: nonEmpty(agent), step: nonEmpty(step), bucket: nonEmpty(bucket), reason: nonEmpty(reason),
            fingerprint: nonEmpty(fingerprint), sinceMilliseconds: since)
    }
}

/// What a `--dry-run` prints (`-o json`): the action, the filter, how many it selects (dead letters, approvals), five of them.
struct DryRunReport<Sample: Encodable>: Encodable {
    var dryRun = true
    var action: String
    var filter: String
    var count: Int
    var samples: [Sample]

    enum CodingKeys: String, CodingKey {
        case dryRun = "dry_run"
        case action, filter, count, samples
    }
}

/// Runs `redrive` or `discard` over the selected dead letters: a preview with `--dry-run`; else (after a
/// confirmation for a bulk action) each letter in turn with progress on stderr, one audit entry for the call,
/// and the reports printed; exits with the worst outcome (5 conflict over 4 not found over 0).
func runDeadAction(
    _ action: String, targets: DeadCommand.Targets, global: GlobalOptions, publishing: Bool,
    _ perform: @escaping (BatonClient, String) async throws -> BatonClient.ActionResult
) async throws {
    let printer = global.output.printer
    let filter = try targets.filter()
    // Never fail open: an empty filter selects everything only with --all.
    guard !targets.isBulk || !filter.isEmpty || targets.all else {
        throw ValidationError("name dead-letter ids or filters, or pass --all to act on every dead letter")
    }
    let filterText = targets.isBulk ? filter.description : "ids"
    try await withClient(global.connection, publishing: publishing) { client in
        var ids = targets.ids
        var samples: [DeadLetterView] = []
        if targets.isBulk {
            let selected = try await client.queries.deadLetters(matching: filter, withBody: false).items
            ids = selected.map(\.id)
            for letter in selected.prefix(5) {
                if let full = try await client.queries.deadLetter(letter.id) { samples.append(full) }
            }
        } else if targets.dryRun {
            for id in ids { if let letter = try await client.queries.deadLetter(id) { samples.append(letter) } }
        }
        if targets.dryRun {
            let count = targets.isBulk ? ids.count : samples.count
            let report = DryRunReport(action: action, filter: filterText, count: count, samples: Array(samples.prefix(5)))
            try printer.one(report, id: action) {
                let head = "dry run: would \(action) \(count) dead letter\(count == 1 ? "" : "s") (\(filterText)); nothing changed"
                let table = DeadCommand.List.render(report.samples, printer: printer)
                return table.isEmpty ? head : head + "\n" + table
            }
            return
        }
        if targets.isBulk {
            if ids.isEmpty {
                Terminal.note("no dead letters match (\(filterText)); nothing to \(action)")
                try printer.list([ActionReport](), id: \.id) { "" }
                return
            }
            try confirm("\(action) \(ids.count) dead letter\(ids.count == 1 ? "" : "s") (\(filterText))?", yes: targets.yes)
        }
        var reports: [ActionReport] = []
        for (index, id) in ids.enumerated() {
            let outcome = try await perform(client, id)
            reports.append(ActionReport(id: id, action: action, outcome: outcome, reason: targets.reason))
            if targets.isBulk && ((index + 1) % 100 == 0 || index + 1 == ids.count) {
                Terminal.note("\(action): \(index + 1)/\(ids.count)")
            }
        }
        let done = reports.filter { $0.exitCode == 0 }
        if !done.isEmpty || targets.isBulk {
            let shown = done.prefix(50).map(\.id).joined(separator: ",") + (done.count > 50 ? ",…" : "")
            try await client.queries.audit(
                actor: targets.effectiveActor, action: "dead.\(action)", target: shown, filter: targets.isBulk ? filterText : nil,
                count: done.count, reason: targets.reason)
        }
        for report in reports where report.exitCode != 0 && (printer.format != .text || printer.quiet) {
            Terminal.error(report.text(printer: Printer(format: .text, quiet: false, color: false), noun: "dead letter"))
        }
        try printer.list(printer.quiet ? done : reports, id: \.id) {
            var lines = reports.map { $0.text(printer: printer, noun: "dead letter") }
            if targets.isBulk { lines.append("\(action): \(done.count) of \(ids.count) done") }
            return lines.joined(separator: "\n")
        }
        if let worst = reports.map(\.exitCode).max(), worst != 0 { throw ExitCode(worst) }
    }
}

/// Asks on the terminal before a bulk action unless `--yes`; without a terminal, `--yes` is required.
func confirm(_ question: String, yes: Bool) throws {
    if yes { return }
    guard isatty(STDIN_FILENO) == 1 else {
        Terminal.error("a bulk action needs confirmation: pass --yes (or preview it with --dry-run)")
        throw ExitCode(CLIExit.usage)
    }
    FileHandle.standardError.write(Data("\(question) [y/N] ".utf8))
    let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
    guard answer == "y" || answer == "yes" else {
        Terminal.note("nothing changed")
        throw ExitCode(CLIExit.failed)
    }
}
