import Baton
import Foundation
import Testing

/// Configuration: flags > environment > YAML file > defaults, and clear errors for bad keys and values.
/// Unit tests: no servers.
@Suite("Configuration")
struct ConfigTests {
    /// The repository's root (this file is Tests/BatonTests/ConfigTests.swift).
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Writes `yaml` to a fresh temporary file and returns its path.
    static func file(_ yaml: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("baton-config-\(UUID().uuidString).yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Loads with an explicit file (never the working directory's) and no ambient environment.
    static func load(_ yaml: String, environment: [String: String] = [:], overrides: [String: String] = [:]) async throws
        -> BatonConfiguration
    {
        let path = try file(yaml)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try await BatonConfiguration.load(file: path, environment: environment, overrides: overrides, workerID: "test")
    }

    /// The configuration error `body` throws.
    static func error(_ body: () async throws -> BatonConfiguration) async -> BatonError? {
        do {
            _ = try await body()
            return nil
        } catch let error as BatonError {
            return error
        } catch {
            Issue.record("expected a BatonError, got \(error)")
            return nil
        }
    }

    @Test func anEmptyFileGivesTheDefaults() async throws {
        let configuration = try await Self.load("# nothing set\n")
        let defaults = Worker.Configuration(amqpURL: Endpoints.localAMQPURL, redisURL: Endpoints.localRedisURL, workerID: "test")
        let worker = configuration.worker
        #expect(worker.amqpURL == Endpoints.localAMQPURL)
        #expect(worker.redisURL == Endpoints.localRedisURL)
        #expect(worker.concurrency == defaults.concurrency)
        #expect(worker.prefetch == defaults.prefetch)
        #expect(worker.queues == nil)
        #expect(worker.drainTimeout == defaults.drainTimeout)
        #expect(worker.protocolSettings.lease == defaults.protocolSettings.lease)
        #expect(worker.protocolSettings.defaultLimits == defaults.protocolSettings.defaultLimits)
        #expect(worker.store.keys == defaults.store.keys)
        #expect(worker.retention == .seconds(7 * 86_400))
        #expect(configuration.file == nil)
    }

    @Test func precedenceIsFlagsThenEnvironmentThenFileThenDefaults() async throws {
        let yaml = "worker:\n  concurrency: 8\n  prefetch: 300\n  lease: 20s\n"
        let environment = ["BATON_WORKER_CONCURRENCY": "16", "BATON_WORKER_LEASE": "25s"]

        let fileOnly = try await Self.load(yaml)
        #expect(fileOnly.worker.concurrency == 8)
        #expect(fileOnly.worker.protocolSettings.lease == .seconds(20))

        let withEnvironment = try await Self.load(yaml, environment: environment)
        #expect(withEnvironment.worker.concurrency == 16)
        #expect(withEnvironment.worker.prefetch == 300)
        #expect(withEnvironment.worker.protocolSettings.lease == .seconds(25))

        let withFlags = try await Self.load(yaml, environment: environment, overrides: ["worker.concurrency": "32"])
        #expect(withFlags.worker.concurrency == 32)
        #expect(withFlags.worker.prefetch == 300)
        #expect(withFlags.worker.protocolSettings.lease == .seconds(25))
        #expect(withFlags.worker.timerInterval == .milliseconds(100))
    }

    @Test func everyKeyIsRead() async throws {
        let yaml = """
            amqp: {url: "amqp://u:p@rabbit.example:5672/v"}
            redis: {url: "redis://cache.example:6379/2", key_prefix: "acme:", buckets: 8}
            worker:
              queues: [fast, slow]
              concurrency: 3
              prefetch: 7
              drain_timeout: 45s
              lease: 9s
              time_slice: 2m
              heartbeat_interval: 3s
              stale_after: 12s
            sweeps: {timer_interval: 250ms, outbox_interval: 4s, outbox_age: 6s, stalled_interval: 7s, dead_letter_intake: false, retention_interval: 30s}
            limits: {checkpoint_max_bytes: 2_000_000, submit_max_bytes: 4096, events_max_length: 500, checkpoints_kept: 3, retention: 3d}
            budget:
              default_max_cost_usd: 2.5
              default_max_tokens: 100000
              default_max_steps: 50
              default_max_tool_calls: 60
              default_max_handoffs: 70
              default_max_attempts: 2
            queues: {delivery_limit: 4, step_max_length: 5000}
            """
        let worker = try await Self.load(yaml).worker
        #expect(worker.amqpURL == "amqp://u:p@rabbit.example:5672/v")
        #expect(worker.redisURL == "redis://cache.example:6379/2")
        #expect(worker.store.keys == RedisKeys(prefix: "acme:", bucketCount: 8))
        #expect(worker.queues == ["fast", "slow"])
        #expect(worker.concurrency == 3)
        #expect(worker.prefetch == 7)
        #expect(worker.drainTimeout == .seconds(45))
        #expect(worker.protocolSettings.lease == .seconds(9))
        #expect(worker.protocolSettings.timeSlice == .seconds(120))
        #expect(worker.heartbeatInterval == .seconds(3))
        #expect(worker.store.workerStaleMilliseconds == 12_000)
        #expect(worker.timerInterval == .milliseconds(250))
        #expect(worker.outboxSweepInterval == .seconds(4))
        #expect(worker.outboxSweepAge == .seconds(6))
        #expect(worker.stalledSweepInterval == .seconds(7))
        #expect(worker.deadLetterIntake == false)
        #expect(worker.retentionSweepInterval == .seconds(30))
        #expect(worker.retention == .seconds(3 * 86_400))
        #expect(worker.protocolSettings.checkpointMaxBytes == 2_000_000)
        #expect(worker.protocolSettings.submitMaxBytes == 4096)
        #expect(worker.store.eventsMaxLength == 500)
        #expect(worker.store.checkpointsKept == 3)
        #expect(
            worker.protocolSettings.defaultLimits
                == BudgetLimits(
                    maxCostMicros: 2_500_000, maxTokens: 100_000, maxSteps: 50, maxToolCalls: 60, maxHandoffs: 70, maxAttempts: 2))
        #expect(worker.queueSettings.deliveryLimit == 4)
        #expect(worker.queueSettings.stepQueueMaxLength == 5000)
    }

    @Test func retentionZeroKeepsFinishedTasksForever() async throws {
        #expect(try await Self.load("limits:\n  retention: 0\n").worker.retention == .zero)
        #expect(try await Self.load("", environment: ["BATON_LIMITS_RETENTION": "12h"]).worker.retention == .seconds(12 * 3600))
    }

    @Test func environmentListsAndFlagListsAreCommaSeparated() async throws {
        #expect(try await Self.load("", environment: ["BATON_WORKER_QUEUES": "a, b"]).worker.queues == ["a", "b"])
        #expect(try await Self.load("", overrides: ["worker.queues": "c,d"]).worker.queues == ["c", "d"])
    }

    @Test func anUnknownKeyNamesTheKeyTheFileAndTheLine() async throws {
        let path = try Self.file("worker:\n  concurrency: 4\n  concurency: 8\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = await Self.error { try await BatonConfiguration.load(file: path, environment: [:]) }
        #expect(error?.code == .configuration)
        #expect(error?.field == "worker.concurency")
        #expect(error?.message.contains("unknown configuration key 'worker.concurency' in \(path):3") == true)
        #expect(error?.message.contains("did you mean 'worker.concurrency'") == true)
    }

    @Test func anUnknownSectionIsAnUnknownKey() async throws {
        let error = await Self.error { try await Self.load("wroker:\n  concurrency: 4\n") }
        #expect(error?.field == "wroker.concurrency")
    }

    @Test func aNegativeValueInTheFileNamesTheKeyTheValueAndTheLine() async throws {
        let path = try Self.file("# comment\nworker:\n  concurrency: -3\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = await Self.error { try await BatonConfiguration.load(file: path, environment: [:]) }
        #expect(error?.code == .configuration)
        #expect(error?.field == "worker.concurrency")
        #expect(error?.message.contains("worker.concurrency must be a whole number") == true)
        #expect(error?.message.contains("\"-3\"") == true)
        #expect(error?.message.contains("\(path):3") == true)
    }

    @Test func aBadEnvironmentValueNamesTheVariable() async throws {
        let error = await Self.error { try await Self.load("", environment: ["BATON_WORKER_PREFETCH": "lots"]) }
        #expect(error?.field == "worker.prefetch")
        #expect(error?.message.contains("BATON_WORKER_PREFETCH") == true)
        #expect(error?.message.contains("\"lots\"") == true)
    }

    @Test(arguments: [
        ("worker:\n  prefetch: 70000\n", "worker.prefetch"),
        ("worker:\n  lease: 500ms\n", "worker.lease"),
        ("worker:\n  drain_timeout: soon\n", "worker.drain_timeout"),
        ("sweeps:\n  dead_letter_intake: maybe\n", "sweeps.dead_letter_intake"),
        ("budget:\n  default_max_cost_usd: -1\n", "budget.default_max_cost_usd"),
        ("amqp:\n  url: http://rabbit\n", "amqp.url"),
        ("redis:\n  url: rediss://cache:6379\n", "redis.url"),
        ("redis:\n  key_prefix: \"a {b}\"\n", "redis.key_prefix"),
        ("worker:\n  concurrency: [1, 2]\n", "worker.concurrency"),
        ("worker:\n  queues: fast\n", "worker.queues"),
        ("limits:\n  signal_mailbox: 0\n", "limits.signal_mailbox"),
        ("limits:\n  max_children: 10001\n", "limits.max_children"),
        ("limits:\n  retention: -1d\n", "limits.retention"),
        ("sweeps:\n  retention_interval: 0\n", "sweeps.retention_interval"),
    ])
    func aBadValueIsAnErrorNamingItsKey(yaml: String, key: String) async throws {
        let error = await Self.error { try await Self.load(yaml) }
        #expect(error?.code == .configuration)
        #expect(error?.field == key)
        #expect(error?.message.contains(key) == true)
    }

    @Test func aMissingExplicitFileIsAnError() async throws {
        let error = await Self.error {
            try await BatonConfiguration.load(file: "/nonexistent/baton.yaml", environment: [:])
        }
        #expect(error?.code == .configuration)
        #expect(error?.message.contains("/nonexistent/baton.yaml does not exist") == true)
    }

    @Test func invalidYAMLIsAnErrorNamingTheFile() async throws {
        let path = try Self.file("worker: [\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = await Self.error { try await BatonConfiguration.load(file: path, environment: [:]) }
        #expect(error?.message.contains("\(path) is not valid YAML") == true)
    }

    @Test func theFileComesFromTheFlagThenBATON_CONFIGThenTheWorkingDirectory() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-cwd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory + "/Config", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(BatonConfiguration.filePath(flag: nil, environment: [:], currentDirectory: directory) == nil)
        try "".write(toFile: directory + "/Config/baton.yaml", atomically: true, encoding: .utf8)
        #expect(BatonConfiguration.filePath(flag: nil, environment: [:], currentDirectory: directory)?.path == "Config/baton.yaml")
        #expect(
            BatonConfiguration.filePath(flag: nil, environment: ["BATON_CONFIG": "/e.yaml"], currentDirectory: directory)?.path == "/e.yaml"
        )
        #expect(
            BatonConfiguration.filePath(flag: "/f.yaml", environment: ["BATON_CONFIG": "/e.yaml"], currentDirectory: directory)?.path
                == "/f.yaml")
    }

    /// Config/baton.yaml lists every key, and its values are the compiled defaults.
    @Test func theShippedFileListsEveryKeyWithItsDefault() async throws {
        let path = Self.repositoryRoot.appendingPathComponent("Config/baton.yaml").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for key in ConfigKeys.all {
            let parts = key.name.split(separator: ".")
            #expect(text.contains("\n\(parts[0]):\n"), "section \(parts[0]) missing")
            #expect(text.contains("\n  \(parts[1]): \(key.defaultValue)\n"), "\(key.name): \(key.defaultValue) missing")
        }
        let shipped = try await BatonConfiguration.load(file: path, environment: [:], workerID: "test")
        let defaults = try await Self.load("")
        let a = shipped.worker
        let b = defaults.worker
        #expect(a.amqpURL == b.amqpURL && a.redisURL == b.redisURL && a.queues == b.queues)
        #expect(a.concurrency == b.concurrency && a.prefetch == b.prefetch && a.drainTimeout == b.drainTimeout)
        #expect(a.heartbeatInterval == b.heartbeatInterval && a.deadLetterIntake == b.deadLetterIntake)
        #expect(a.timerInterval == b.timerInterval && a.outboxSweepInterval == b.outboxSweepInterval)
        #expect(a.outboxSweepAge == b.outboxSweepAge && a.stalledSweepInterval == b.stalledSweepInterval)
        #expect(a.protocolSettings.lease == b.protocolSettings.lease && a.protocolSettings.timeSlice == b.protocolSettings.timeSlice)
        #expect(a.protocolSettings.checkpointMaxBytes == b.protocolSettings.checkpointMaxBytes)
        #expect(a.protocolSettings.submitMaxBytes == b.protocolSettings.submitMaxBytes)
        #expect(a.protocolSettings.defaultLimits == b.protocolSettings.defaultLimits)
        #expect(a.protocolSettings.maxChildren == b.protocolSettings.maxChildren)
        #expect(a.store.keys == b.store.keys && a.store.eventsMaxLength == b.store.eventsMaxLength)
        #expect(a.store.checkpointsKept == b.store.checkpointsKept && a.store.workerStaleMilliseconds == b.store.workerStaleMilliseconds)
        #expect(a.store.signalMailboxCap == b.store.signalMailboxCap)
        #expect(a.queueSettings.deliveryLimit == b.queueSettings.deliveryLimit)
        #expect(a.queueSettings.stepQueueMaxLength == b.queueSettings.stepQueueMaxLength)
    }

    @Test func environmentNamesFollowTheKeys() {
        let names = Dictionary(uniqueKeysWithValues: ConfigKeys.all.map { ($0.name, $0.environmentName) })
        #expect(names["worker.concurrency"] == "BATON_WORKER_CONCURRENCY")
        #expect(names["amqp.url"] == "BATON_AMQP_URL")
        #expect(names["redis.key_prefix"] == "BATON_REDIS_KEY_PREFIX")
    }

    @Test(arguments: [
        ("100ms", Duration.milliseconds(100)), ("30s", .seconds(30)), ("1.5s", .milliseconds(1500)), ("5m", .seconds(300)),
        ("24h", .seconds(86_400)), ("7d", .seconds(604_800)), ("30", .seconds(30)),
    ])
    func durationsParse(text: String, expected: Duration) {
        #expect(DurationText.parse(text) == expected)
    }

    @Test func badDurationsDoNotParse() {
        for text in ["", "s", "-1s", "10 parsecs", "1x"] { #expect(DurationText.parse(text) == nil, "\(text)") }
    }

    @Test("a duration too long to count in milliseconds does not parse (it used to trap), 100 years does")
    func hugeDurationsDoNotParse() {
        for text in ["1e300d", "1e300", "inf", "nan", "36501d", "99999999999999999999ms"] {
            #expect(DurationText.parse(text) == nil, "\(text)")
        }
        #expect(DurationText.parse("36500d") == .seconds(36_500 * 86_400))
    }

    @Test("Duration.wholeMilliseconds rounds toward zero and saturates instead of trapping")
    func wholeMillisecondsSaturate() {
        #expect(Duration.milliseconds(1500).wholeMilliseconds == 1500)
        #expect(Duration.microseconds(2999).wholeMilliseconds == 2)
        #expect(Duration.milliseconds(-1500).wholeMilliseconds == -1500)
        #expect(Duration.seconds(Int64.max).wholeMilliseconds == Int64.max / 2)
        #expect(Duration.seconds(Int64.min).wholeMilliseconds == -(Int64.max / 2))
        #expect(Duration.seconds(Int64.max / 1000).wholeMilliseconds == Int64.max / 2)
    }
}

@Suite("Redis memory advice (baton doctor)")
struct RedisMemoryAdviceTests {
    @Test("hash-max-listpack-value below 128 (Redis's default 64) is a warning that names the value and the cost")
    func warnsBelowTheRecommendedValue() throws {
        let warning = try #require(RedisMemoryAdvice.hashListpackValueWarning("64"))
        #expect(warning.contains("hash-max-listpack-value 64"))
        #expect(warning.contains("3.8 KB"))
        #expect(RedisMemoryAdvice.hashListpackValueWarning("not a number") != nil)
        #expect(RedisMemoryAdvice.hashListpackValueWarning("128") == nil)
        #expect(RedisMemoryAdvice.hashListpackValueWarning("512") == nil)
    }
}
