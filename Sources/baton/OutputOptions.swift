import ArgumentParser
import Baton
import Foundation

/// How results are printed: `-o text|json|jsonl` (`--json` is `-o json`), `-q` for ids only, `--color`.
///
/// Results go to stdout, everything else (logs, notes, errors) to stderr, so `baton list -q | xargs baton cancel`
/// and `baton status T --json | jq` work.
struct OutputOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json, jsonl
    }

    enum ColorMode: String, ExpressibleByArgument, CaseIterable {
        case auto, always, never
    }

    @Option(name: [.customShort("o"), .customLong("output")], help: "text, json or jsonl (one object per line).")
    var format: Format = .text

    @Flag(name: .customLong("json"), help: "The same as -o json.")
    var json = false

    @Flag(name: [.customShort("q"), .customLong("quiet")], help: "Print ids only, one per line.")
    var quiet = false

    @Option(name: .customLong("color"), help: "auto (on a terminal unless NO_COLOR is set), always or never.")
    var color: ColorMode = .auto

    func validate() throws {
        if json && format == .jsonl { throw ValidationError("--json and -o jsonl contradict each other: pick one") }
    }

    /// The format in effect.
    var effectiveFormat: Format { json ? .json : format }

    /// The printer for these options.
    var printer: Printer {
        Printer(format: effectiveFormat, quiet: quiet, color: Self.useColor(color, format: effectiveFormat))
    }

    /// Colour only for text on a terminal, never when `NO_COLOR` is set (unless `--color always`).
    static func useColor(
        _ mode: ColorMode, format: Format, environment: [String: String] = ProcessInfo.processInfo.environment,
        isTerminal: Bool = isatty(STDOUT_FILENO) == 1
    ) -> Bool {
        guard format == .text else { return false }
        switch mode {
        case .always: return true
        case .never: return false
        case .auto:
            if let noColor = environment["NO_COLOR"], !noColor.isEmpty { return false }
            if environment["TERM"] == "dumb" { return false }
            return isTerminal
        }
    }
}

/// Prints results in the chosen format.
struct Printer {
    var format: OutputOptions.Format
    var quiet: Bool
    var color: Bool

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func json(_ value: some Encodable) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// One object: JSON as is (jsonl: one line, the same), `-q` its id, text as `text()` renders it.
    func one(_ value: some Encodable, id: String, text: () -> String) throws {
        if quiet {
            print(id)
            return
        }
        switch format {
        case .json, .jsonl: print(try Self.json(value))
        case .text: print(text())
        }
    }

    /// A list: `{"items": [...]}` as JSON (with `"next_cursor": "…" | null` when `paged`), one object per line as
    /// jsonl, ids with `-q`, else `text()` (which may print nothing for an empty list: a note goes to stderr instead).
    func list<Item: Encodable>(
        _ items: [Item], id: (Item) -> String, paged: Bool = false, nextCursor: String? = nil, text: () -> String
    ) throws {
        if quiet {
            for item in items { print(id(item)) }
            return
        }
        switch format {
        case .json: print(try Self.json(ListPage(items: items, paged: paged, nextCursor: nextCursor)))
        case .jsonl: for item in items { print(try Self.json(item)) }
        case .text:
            let rendered = text()
            if !rendered.isEmpty { print(rendered) }
        }
    }

    /// `text` in `code` (an SGR code) when colour is on.
    func paint(_ text: String, _ code: String) -> String {
        color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    /// A status in its colour: green done, red failed, yellow held, cyan moving.
    func status(_ status: String) -> String {
        switch status {
        case "succeeded": paint(status, "32")
        case "failed", "dead_lettered", "budget_exceeded": paint(status, "31")
        case "cancelled": paint(status, "2")
        case "paused", "retrying", "waiting", "sleeping", "needs_review": paint(status, "33")
        case "running", "queued": paint(status, "36")
        default: status
        }
    }
}
