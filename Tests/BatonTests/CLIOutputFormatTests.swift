import Baton
import Foundation
import TestSupport
import Testing

/// Acceptance 4 of issue 6: every CLI read command answers `-o json` (one JSON object; lists as `{"items": […]}`)
/// and `-o jsonl` (one JSON object a line), on the real servers.
@Suite("CLI output formats")
struct CLIOutputFormatTests {
    @Test(.enabled(if: TestServers.available), .timeLimit(.minutes(4)))
    func everyReadCommandAnswersJSONAndJSONL() async throws {
        let agent = TestServers.uniqueName("cli-formats")
        let waiting = try await HTTPAPITests.waitingTask(agent: agent)
        let made = try await CLIOperatorTests.deadLetters(
            agent: agent, queue: agent, [.init(step: "fetch", bucket: "provider_5xx", error: { "HTTP 502 for \($0)" })])
        let letter = try #require(made.first?.letter)
        // (arguments, is a list: `{"items"}` in json, one line per item in jsonl). The fleet-wide lists (audit,
        // workers, queues) change between two calls on the shared servers: their line count is not compared.
        let commands: [([String], Bool)] = [
            (["status", waiting], false), (["list", "--agent", agent], true), (["history", waiting], true),
            (["checkpoint", waiting], false), (["inbox", "--agent", agent], true), (["dead", "list", "--agent", agent], true),
            (["dead", "list", "--agent", agent, "--group-by", "step"], true), (["dead", "show", letter], false),
            (["audit", "--limit", "3"], true), (["workers"], true), (["queues"], true), (["stats", "--since", "1h"], false),
        ]
        let volatile: Set<String> = ["audit", "workers", "queues"]
        for (arguments, isList) in commands {
            let json = try await CLITests.baton(arguments + ["-o", "json"])
            #expect(json.status == 0, "\(arguments): \(json.error)")
            let object = try CLIOperatorTests.json(json.output)
            if isList { #expect(object["items"] is [Any], "\(arguments) -o json: \(json.output.prefix(300))") }
            let lines = try await CLITests.baton(arguments + ["-o", "jsonl"])
            #expect(lines.status == 0, "\(arguments): \(lines.error)")
            let rows = try CLIOperatorTests.jsonLines(lines.output)
            if isList && volatile.contains(arguments[0]) {
                #expect(!lines.output.isEmpty || (object["items"] as? [Any])?.isEmpty == true, "\(arguments) -o jsonl")
            } else if isList {
                #expect(rows.count == (object["items"] as? [Any])?.count, "\(arguments) -o jsonl: one line per item")
            } else {
                #expect(rows.count == 1, "\(arguments) -o jsonl: one line")
            }
        }
        let inbox = try CLIOperatorTests.jsonLines(try await CLITests.baton(["inbox", "--agent", agent, "-o", "jsonl"]).output)
        #expect(inbox.compactMap { ($0["task"] as? [String: Any])?["id"] as? String } == [waiting])
        // Exit codes: 4 not found, 64 usage.
        #expect(try await CLITests.baton(["status", "nope-\(agent)", "-o", "json"]).status == 4)
        #expect(try await CLITests.baton(["dead", "show", "nope-\(agent)", "-o", "json"]).status == 4)
        #expect(try await CLITests.baton(["list", "--limit", "0"]).status == 64)
    }
}
