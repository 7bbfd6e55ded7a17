import BatonExamples
import Foundation
import TestSupport
import Testing

@testable import Baton

/// A step that outlives its delivery (DESIGN.md §3 and §5): RabbitMQ's `consumer_timeout` set to seconds on a node of
/// this test's own (the setting is global to a node, so never on the shared servers).
@Suite("Integration: consumer_timeout", .serialized)
struct IntegrationConsumerTimeoutTests {
    /// Milliseconds; the broker checks it every `channel_tick_interval` (500 ms here, 60 s by default).
    static let consumerTimeout = 2_000

    @Test(
        "A step longer than consumer_timeout: the broker closes the channel (406 PRECONDITION_FAILED), the worker reopens it, the redelivered step is a duplicate, and each task completes exactly once",
        .enabled(if: TestServers.required || IntegrationWaitRestartTests.installed), .timeLimit(.minutes(4)))
    func longStepOutlivesItsDelivery() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        try await sandbox.withServices(prepare: { services in
            try FileManager.default.createDirectory(atPath: services.rabbitMQPaths.base, withIntermediateDirectories: true)
            try "[{rabbit, [{consumer_timeout, \(Self.consumerTimeout)}, {channel_tick_interval, 500}]}].\n".write(
                toFile: services.rabbitMQPaths.base + "/advanced.config", atomically: true, encoding: .utf8)
        }) { services in
            try await Self.run(services, sandbox.configuration)
        }
    }

    static func run(_ services: LocalServices, _ configuration: LocalServices.Configuration) async throws {
        #expect(await services.consumerTimeout(amqpPort: configuration.amqpPort) == .milliseconds(Int64(Self.consumerTimeout)))
        let urls = ["BATON_AMQP_URL": configuration.amqpURL, "BATON_REDIS_URL": configuration.redisURL]
        let client = try await BatonClient.connect(
            amqpURL: configuration.amqpURL, redisURL: configuration.redisURL, publishing: true, logger: Harness.logger)
        defer { Task { await client.close() } }
        let id = TestServers.uniqueName("it-ctimeout")
        let process = try WorkerProcess.start(
            executable: try Harness.baton(), arguments: ["worker", "--id", id, "--lease", "3", "--drain-timeout", "3"],
            environment: Harness.environment(urls), outputFile: try TestFiles.path("worker-ctimeout") + ".log")
        let worker = try await Harness.registered(process, id: id, client: client, timeout: .seconds(30))
        defer { worker.process.sigkill() }

        let run = TestServers.uniqueName("run")
        let directory = try TestFiles.directory()
        let effects: [String: JSONValue] = ["run": .string(run), "effects_dir": .string(directory)]
        // Each step of the long task sleeps 2.5 × the timeout; a short chain runs beside it on the same consumer.
        let long = try await Harness.submit(
            client,
            SubmitRequest(
                id: TestServers.uniqueName("ctimeout-long"), agent: "stepchain",
                input: .object(
                    effects.merging(["steps": 2, "record_bytes": 8, "sleep_ms": .int(Int64(Self.consumerTimeout * 5 / 2))]) { $1 }),
                labels: ["run": run]))
        let short = try await Harness.submit(
            client,
            SubmitRequest(
                id: TestServers.uniqueName("ctimeout-short"), agent: "stepchain",
                input: .object(effects.merging(["steps": 30, "record_bytes": 8, "sleep_ms": 100]) { $1 }), labels: ["run": run]))
        for (task, steps) in [(long, Int64(2)), (short, Int64(30))] {
            let view = try await Harness.waitForStatus(client, task, ["succeeded"], timeout: .seconds(90), workers: [worker])
            #expect(view.seq == steps)
            let commits = Harness.commitSeqs(try await client.queries.history(task))
            #expect(commits == Array(1...steps), "each step committed once, in order")
        }
        #expect(try await Harness.records(client, long).count == 2)

        // The broker did time the deliveries out and closed the channel; the worker reopened it and kept going.
        let brokerLog = (try? String(contentsOfFile: services.logFile(of: .rabbitmq), encoding: .utf8)) ?? ""
        #expect(brokerLog.contains("timed out waiting for delivery acknowledgement"), "\(brokerLog.suffix(2000))")
        let log = worker.log
        #expect(log.contains("AMQP channel closed by the broker"), "\(log.suffix(3000))")
        #expect(log.contains("406"), "\(log.suffix(3000))")
        #expect(log.contains("consumer_timeout"), "the error names the setting to fix")
        #expect(worker.process.isRunning)

        // Exactly once, from outside: every effect applied once, nothing lost, nothing left on the step queue.
        let (status, report, output) = try await IntegrationTests.verifyCLI(
            run: run, sink: EffectsSink.path(directory: directory, run: run), environment: urls, queue: "default")
        #expect(status == 0, "\(output)")
        #expect(report?.submitted == 2)
        #expect(report?.succeeded == 2)
        #expect(report?.lost == 0)
        #expect(report?.duplicateEffects == 0)
        #expect(report?.staleWrites == 0)
        await worker.process.stop()
    }
}
