import Foundation
import Testing

/// The event relay finds a task's new events because every script that appends one marks the task in its
/// bucket's `events_pending` zset, which the script finds as its LAST key (`Scripts.common`). A script that
/// appends events but is not passed that key would leave its events unpublished until the task's next marked
/// event: this reads the sources and checks every call site (a guard for scripts added later).
@Suite("Events: every event-appending script is passed events_pending last")
struct EventMarkingConventionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The names of the scripts in `Scripts.swift` that append events (`add_event(` or `wake(` in their own text,
    /// or built on `waits`).
    static func eventScripts() throws -> Set<String> {
        let text = try String(contentsOf: root.appendingPathComponent("Sources/Baton/Store/Scripts.swift"), encoding: .utf8)
        let starts = try NSRegularExpression(pattern: #"static let (\w+) ="#).matches(
            in: text, range: NSRange(text.startIndex..., in: text))
        var names: Set<String> = []
        for (index, match) in starts.enumerated() {
            guard let nameRange = Range(match.range(at: 1), in: text), let start = Range(match.range, in: text)?.upperBound else {
                continue
            }
            let end = index + 1 < starts.count ? Range(starts[index + 1].range, in: text)?.lowerBound ?? text.endIndex : text.endIndex
            let name = String(text[nameRange])
            guard name != "common" && name != "waits" else { continue }
            let body = text[start..<end]
            if body.contains("add_event(") || body.contains("wake(")
                || body.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix("waits")
            {
                names.insert(name)
            }
        }
        return names
    }

    @Test func everyCallSitePassesEventsPendingAsTheLastKey() throws {
        let scripts = try Self.eventScripts()
        #expect(scripts.isSuperset(of: ["submit", "claim", "progress", "commit", "signal", "fireWaitTimer", "control"]))
        let sources = Self.root.appendingPathComponent("Sources")
        let files =
            FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)?.compactMap { $0 as? URL }
            .filter { $0.pathExtension == "swift" } ?? []
        var checked = 0
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for name in scripts {
                var search = text.startIndex..<text.endIndex
                while let use = text.range(of: ".\(name)Script", range: search) {
                    search = use.upperBound..<text.endIndex
                    // The call's keys: the first `keys: [` after the use, up to its closing bracket.
                    guard let open = text.range(of: "keys: [", range: use.upperBound..<text.endIndex),
                        text.distance(from: use.upperBound, to: open.lowerBound) < 200
                    else { continue }
                    var depth = 1
                    var cursor = open.upperBound
                    while cursor < text.endIndex && depth > 0 {
                        if text[cursor] == "[" { depth += 1 }
                        if text[cursor] == "]" { depth -= 1 }
                        cursor = text.index(after: cursor)
                    }
                    let keys = text[open.upperBound..<text.index(before: cursor)]
                    let parts: [String] = keys.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
                    let last = parts.last { !$0.isEmpty } ?? ""
                    #expect(last.contains("eventsPending("), "\(file.lastPathComponent): \(name)Script's last key is \(last)")
                    checked += 1
                }
            }
        }
        #expect(checked >= 7)
    }
}
