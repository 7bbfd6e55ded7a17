import Baton
import BatonExamples
import Foundation
import TestSupport
import Testing

/// The step protocol end to end (issue 4, acceptance 1–8): real `baton worker` child processes on the real
/// RabbitMQ and Redis of `scripts/test`.
///
/// Every test here starts its own workers and kills them before it ends; the suite is `.serialized` so that a
/// crash test's crashing worker is the only worker taking the first delivery. Tests share the `baton:` prefix
/// and the `baton.steps.default` queue with anything else on the servers, so every task has an id of its own
/// and nothing is flushed or purged.
@Suite("Integration: workers on real servers", .serialized, .enabled(if: TestServers.available))
struct IntegrationTests {
    // MARK: 1. A non-Swift client

    /// The Python interpreter that has `pika` (Debian's `python3-pika` is for `/usr/bin/python3`).
    static var python: String {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "/usr/local/bin/python3"
    }

    static let pythonScript = BatonBinary.packageRoot + "/Tests/python/submit_stepchain.py"

    @Test("A stepchain task submitted by Python's pika completes; the reply and `baton status --json` agree", .timeLimit(.minutes(4)))
    func pythonClientSubmit() async throws {
        try await Harness.withClient { client in
            let worker = try await Harness.startWorker("python", client: client)
            defer { worker.process.sigkill() }
            let id = TestServers.uniqueName("py-stepchain")
            let steps: Int64 = 6
            let run = try await WorkerProcess.run(
                executable: Self.python,
                arguments: [
                    Self.pythonScript, "--amqp", TestServers.amqpURL, "--id", id, "--steps", String(steps), "--tokens-per-step", "11",
                    "--cost-usd-per-step", "0.125",
                ],
                timeout: .seconds(60))
            #expect(run.status == 0, "the pika client failed: \(run.error)")
            let reply = try JSONValue.parse(Array(run.output.utf8))
            #expect(reply == ["v": 1, "task_id": .string(id), "status": "queued"])

            let view = try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            #expect(view.tenant == "python-client")
            #expect(view.labels == ["client": "pika"])

            let status = try await WorkerProcess.run(
                executable: try Harness.baton(), arguments: ["status", id, "--json"], environment: Harness.environment())
            #expect(status.status == 0, "baton status failed: \(status.error)")
            let json = try JSONValue.parse(Array(status.output.utf8))
            #expect(json["id"]?.stringValue == reply["task_id"]?.stringValue)
            #expect(json["agent"]?.stringValue == "stepchain")
            #expect(json["status"]?.stringValue == "succeeded")
            #expect(json["seq"]?.intValue == steps)
            #expect(json["budget"]?["used"]?["tokens"]?.intValue == steps * 11)
            #expect(json["budget"]?["used"]?["steps"]?.intValue == steps)
            #expect(json["budget"]?["used"]?["cost_usd"]?.doubleValue == Double(steps) * 0.125)
            #expect(json["budget"]?["limits"]?["max_steps"]?.intValue == 500)
            #expect(json["result"]?["records"]?.intValue == steps)
            #expect(try await Harness.records(client, id).count == Int(steps))
            await worker.process.stop()
        }
    }
}
