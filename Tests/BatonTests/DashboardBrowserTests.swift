import Baton
import Foundation
import TestSupport
import Testing

/// Whether the browser test can run here.
enum DashboardBrowser {
    /// Under `scripts/test` (BATON_REQUIRE_SERVERS=1) a missing browser fails the test; elsewhere it skips it.
    static var required: Bool { ProcessInfo.processInfo.environment["BATON_REQUIRE_SERVERS"] == "1" }

    /// What is missing of the browser and Selenium, nil when all is installed.
    static var missing: String? {
        let needed = [DashboardBrowserTests.python, "/usr/bin/chromium", "/usr/bin/chromedriver"]
        guard let missing = needed.first(where: { !FileManager.default.isExecutableFile(atPath: $0) }) else { return nil }
        return "\(missing) is missing: run scripts/test (it installs chromium and chromium-driver, and Selenium into .build/dashboard-venv)"
    }
}

/// The dashboard in a real headless browser (issue 6, acceptance 2 and 5): a `baton worker` child and a
/// `baton serve` child on the test servers, driven by `Tests/python/dashboard_browser.py` (Selenium + Debian's
/// Chromium, both installed by `scripts/test`: `chromium chromium-driver` from apt, Selenium in
/// `.build/dashboard-venv`).
@Suite(
    "Dashboard in a headless browser", .serialized,
    .enabled(if: TestServers.available && (DashboardBrowser.missing == nil || DashboardBrowser.required)))
struct DashboardBrowserTests {
    static let python = BatonBinary.packageRoot + "/.build/dashboard-venv/bin/python"
    static let script = BatonBinary.packageRoot + "/Tests/python/dashboard_browser.py"
    static let operatorToken = "dash-operator-token-\(UUID().uuidString.prefix(8))"
    static let viewerToken = "dash-viewer-token-\(UUID().uuidString.prefix(8))"

    @Test(
        "An operator approves from the Inbox and redrives a dead-letter group; a viewer sees no buttons; nothing leaves the server",
        .timeLimit(.minutes(4)))
    func approveAndRedriveInTheBrowser() async throws {
        if let missing = DashboardBrowser.missing {
            Issue.record(Comment(rawValue: missing))
            return
        }
        try await Harness.withClient { client in
            let worker = try await Harness.startWorker("dash", client: client)
            defer { worker.process.sigkill() }
            let port = try TestPorts.free()
            let tokens = "operator:ana:\(Self.operatorToken),viewer:val:\(Self.viewerToken)"
            var environment = Harness.environment(["BATON_HTTP_TOKENS": tokens])
            environment["BATON_CONFIG"] = nil
            let server = try WorkerProcess.start(
                executable: try Harness.baton(), arguments: ["serve", "--bind", "127.0.0.1:\(port)"], environment: environment,
                outputFile: try TestFiles.path("dash-serve") + ".log")
            defer { server.sigkill() }
            let listening = await eventually { server.output.contains("listening on http://127.0.0.1:\(port)") }
            try #require(listening, "baton serve did not start: \(server.output)")

            // A tenant of its own: the Inbox lists the oldest 100 first, and the shared test servers keep other runs'
            // unanswered approvals.
            let tenant = TestServers.uniqueName("dash").replacingOccurrences(of: ".", with: "-")
            let approval = try await Harness.submit(
                client,
                SubmitRequest(
                    id: TestServers.uniqueName("dash-approval"), agent: "approval", input: ["timeout_seconds": 600], tenant: tenant))
            // A second one of that tenant, approved with "Approve all matching" (after the first was edited & approved).
            let bulkApproval = try await Harness.submit(
                client,
                SubmitRequest(
                    id: TestServers.uniqueName("dash-bulk-approval"), agent: "approval", input: ["timeout_seconds": 600], tenant: tenant))
            // A bucket of this run's own: its dead letters form a fingerprint group no other test shares.
            let bucket = "dash_" + TestServers.uniqueName("x").split(separator: ".").last!
            var dead: [String] = []
            for index in 0..<2 {
                dead.append(
                    try await Harness.submit(
                        client,
                        SubmitRequest(
                            id: TestServers.uniqueName("dash-dead-\(index)"), agent: "flaky",
                            input: ["permanent": true, "bucket": .string(bucket)])))
            }
            try await Harness.waitForStatus(client, approval, ["waiting"], workers: [worker])
            try await Harness.waitForStatus(client, bulkApproval, ["waiting"], workers: [worker])
            for id in dead { try await Harness.waitForStatus(client, id, ["dead_lettered"], workers: [worker]) }

            let shots = try TestFiles.path("dashboard-screenshots")
            var arguments = [
                Self.script, "--url", "http://127.0.0.1:\(port)", "--token", Self.operatorToken, "--viewer-token", Self.viewerToken,
                "--approval", approval, "--bulk-approval", bulkApproval, "--tenant", tenant, "--dead", dead.joined(separator: ","),
                "--bucket", bucket, "--screenshots",
                shots,
            ]
            // The README's two screenshots: written when missing, refreshed with BATON_UPDATE_SCREENSHOTS=1.
            let docs = BatonBinary.packageRoot + "/docs/screenshots"
            let refresh = ProcessInfo.processInfo.environment["BATON_UPDATE_SCREENSHOTS"] == "1"
            if refresh || !["inbox", "dead-letters"].allSatisfy({ FileManager.default.fileExists(atPath: "\(docs)/\($0).png") }) {
                arguments += ["--docs", docs]
            }
            let run = try await WorkerProcess.run(executable: Self.python, arguments: arguments, timeout: .seconds(100))
            #expect(run.status == 0, "the browser test failed:\n\(run.error.suffix(4000))\n--- serve:\n\(server.output.suffix(2000))")

            let approved = try await Harness.waitForStatus(client, approval, ["succeeded"], workers: [worker])
            #expect(approved.result?["decision"]?.stringValue == "approve")
            #expect(approved.result?["actor"]?.stringValue == "http:ana (operator)")
            #expect(approved.result?["payload"]?["note"] == "edited in the browser", "Edit & approve patched the input")
            let bulkApproved = try await Harness.waitForStatus(client, bulkApproval, ["succeeded"], workers: [worker])
            #expect(bulkApproved.result?["decision"]?.stringValue == "approve")
            for id in dead {
                let view = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
                #expect(view.branch >= 1, "task \(id) succeeded without a redrive")
            }
            let audit = try await client.queries.auditEntries(limit: 500)
            #expect(
                audit.contains { $0.action == "dead.redrive" && $0.actor == "http:ana (operator)" && $0.reason.contains("browser test") })
            #expect(audit.contains { $0.action == "approve" && $0.filter == "agent=approval,tenant=\(tenant)" && $0.count == 1 })
            for page in ["overview", "inbox", "task-approved", "dead-letters", "task-redriven", "tasks", "workers", "audit"] {
                #expect(FileManager.default.fileExists(atPath: "\(shots)/\(page).png"), "no screenshot of \(page)")
            }
            await worker.process.stop()
        }
    }
}
