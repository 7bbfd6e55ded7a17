import Baton
import BatonExamples
import Foundation
import TestSupport
import Testing

/// Waits across restarts of the servers themselves: a RabbitMQ node and a Redis of this test's own (a
/// sandbox on free ports, like `baton services` starts), so restarting them disturbs nothing else.
@Suite("Integration: waits across server restarts", .serialized)
struct IntegrationWaitRestartTests {
    static var installed: Bool { LocalServicesTests.rabbitMQInstalled && LocalServicesTests.redisInstalled }

    @Test(
        "A sleeping and a waiting task survive a restart of RabbitMQ and Redis (and of every worker), then wake by timer and by signal",
        .enabled(if: TestServers.required || installed), .timeLimit(.minutes(4)))
    func waitsSurviveServerRestarts() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let stoppedAtEnd = try await sandbox.withServices { services in try await Self.run(services, sandbox.configuration) }
        let stoppedCleanly = stoppedAtEnd.allSatisfy { $0.stopped && !$0.killed }
        #expect(stoppedCleanly, "\(stoppedAtEnd)")
    }

    static func run(_ services: LocalServices, _ configuration: LocalServices.Configuration) async throws {
        let environment = Harness.environment(["BATON_AMQP_URL": configuration.amqpURL, "BATON_REDIS_URL": configuration.redisURL])

        func startWorker(_ name: String, client: BatonClient) async throws -> Harness.Worker {
            let id = TestServers.uniqueName("it-\(name)")
            let process = try WorkerProcess.start(
                executable: try Harness.baton(), arguments: ["worker", "--id", id, "--lease", "3", "--drain-timeout", "3"],
                environment: environment, outputFile: try TestFiles.path("worker-\(name)") + ".log")
            return try await Harness.registered(process, id: id, client: client, timeout: .seconds(30))
        }
        func connect() async throws -> BatonClient {
            try await BatonClient.connect(
                amqpURL: configuration.amqpURL, redisURL: configuration.redisURL, publishing: true, logger: Harness.logger)
        }

        var client = try await connect()
        let first = try await startWorker("servers-1", client: client)
        defer { first.process.sigkill() }
        let sleeper = try await Harness.submit(
            client, SubmitRequest(id: TestServers.uniqueName("servers-sleeper"), agent: "sleeper", input: ["seconds": 8]))
        let approval = try await Harness.submit(
            client,
            SubmitRequest(id: TestServers.uniqueName("servers-approval"), agent: "approval", input: ["timeout_seconds": 3600]))
        try await Harness.waitForStatus(client, sleeper, ["sleeping"], workers: [first])
        try await Harness.waitForStatus(client, approval, ["waiting"], workers: [first])
        // Past Redis's `appendfsync everysec` window: the waits are on disk.
        try await Task.sleep(for: .seconds(2))

        first.process.sigkill()
        _ = await first.process.waitForExit(timeout: .seconds(10))
        await client.close()
        let stopped = try await services.stop()
        let allStopped = stopped.allSatisfy { $0.stopped }
        #expect(allStopped, "\(stopped)")
        let restarted = try await services.start()
        let allStarted = restarted.allSatisfy { !$0.alreadyRunning }
        #expect(allStarted, "\(restarted)")

        client = try await connect()
        defer {
            let client = client
            Task { await client.close() }
        }
        let afterRestart = try #require(try await client.queries.task(approval))
        #expect(afterRestart.status == "waiting")
        #expect(afterRestart.waitingFor?.first == ["signal": "approve"])

        let second = try await startWorker("servers-2", client: client)
        defer { second.process.sigkill() }
        let outcome = try await client.signal(
            TaskSignal(task: approval, name: "approve", payloadJSON: #"{"after":"restart"}"#, id: "restart-1", actor: "ops"))
        #expect(outcome == .woke)
        let slept = try await Harness.waitForStatus(client, sleeper, ["succeeded"], timeout: .seconds(60), workers: [first, second])
        #expect(slept.result?["trigger"] == "time")
        let decided = try await Harness.waitForStatus(client, approval, ["succeeded"], workers: [first, second])
        #expect(decided.result?["decision"] == "approve")
        #expect(decided.result?["payload"] == ["after": "restart"])
        for id in [sleeper, approval] {
            #expect(try await client.queries.history(id).filter { $0.type == "woke" }.count == 1)
        }
        await second.process.stop()
    }
}
