import AMQPClient
import ArgumentParser
import Baton
import Foundation
import Logging
import RedisClient

/// `baton doctor`: checks the servers and the fleet against what Baton needs, and says how to fix each problem.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor", abstract: "Check Redis, RabbitMQ and the workers; print each problem with its fix.",
        discussion: """
            Checks: Redis reachable, AOF on, maxmemory-policy noeviction, hash-max-listpack-value ≥ 128 (a warning: memory per \
            task), clock skew against Redis; RabbitMQ reachable, the \
            topology declared, consumer_timeout above worker.time_slice (read with rabbitmqctl from the node of \
            `baton services`; any other broker: unknown); live workers with fresh heartbeats. Exit 0 when every check \
            passes (a warning or an unknown does not fail it), 1 when one finds a problem. Queue headroom: a step queue \
            80 % of queues.step_max_length full is a problem; a queue with messages and no consumer is a warning. \
            -o json: {"ok": bool, "items": [{"check", "status" (ok, problem, warning, unknown), "detail", "fix"}]}.
            """)

    @OptionGroup var global: GlobalOptions

    struct Check: Encodable {
        var check: String
        /// `ok`, `problem` or `unknown`.
        var status: String
        var detail: String
        var fix: String?

        static func ok(_ check: String, _ detail: String) -> Check { Check(check: check, status: "ok", detail: detail) }
        static func problem(_ check: String, _ detail: String, fix: String) -> Check {
            Check(check: check, status: "problem", detail: detail, fix: fix)
        }
        static func unknown(_ check: String, _ detail: String) -> Check { Check(check: check, status: "unknown", detail: detail) }
        static func warning(_ check: String, _ detail: String, fix: String) -> Check {
            Check(check: check, status: "warning", detail: detail, fix: fix)
        }
    }

    struct Report: Encodable {
        var ok: Bool
        var items: [Check]
    }

    func run() async throws {
        let printer = global.output.printer
        let configuration = try await global.connection.load()
        var checks = await Self.redisChecks(configuration)
        checks += await Self.rabbitMQChecks(configuration)
        if checks.contains(where: { $0.check == "rabbitmq" && $0.status == "ok" }) {
            checks += await Self.queueChecks(configuration)
        }
        let report = Report(ok: !checks.contains { $0.status == "problem" }, items: checks)
        switch printer.format {
        case .json where !printer.quiet: print(try Printer.json(report))
        default: try printer.list(checks, id: \.check) { Self.render(checks, printer: printer) }
        }
        if !report.ok { throw ExitCode(CLIExit.failed) }
    }

    static func render(_ checks: [Check], printer: Printer) -> String {
        checks.map { check in
            let mark =
                switch check.status {
                case "ok": printer.paint("ok     ", "32")
                case "problem": printer.paint("PROBLEM", "31")
                case "warning": printer.paint("warning", "33")
                default: printer.paint("unknown", "33")
                }
            var line = "\(mark)  \(check.check): \(check.detail)"
            if let fix = check.fix { line += "\n         fix: \(fix)" }
            return line
        }
        .joined(separator: "\n")
    }

    // MARK: - Redis

    static func redisChecks(_ configuration: BatonConfiguration) async -> [Check] {
        let url = configuration.redisURL
        let redis: RedisConnection
        do {
            redis = try await RedisConnection.connect(configuration: try RedisConfiguration(url: url), logger: Logger(label: "baton.cli"))
            _ = try await redis.send("PING")
        } catch {
            return [
                .problem(
                    "redis", "cannot reach Redis at \(redactedRedis(url)): \(error)",
                    fix: "start Redis (`baton services start` locally) or point --redis / BATON_REDIS_URL / redis.url at it")
            ]
        }
        var checks: [Check] = [.ok("redis", "reachable at \(redactedRedis(url))")]
        func config(_ name: String) async -> String? {
            guard let reply = try? await redis.send("CONFIG", "GET", name), let values = reply.array, values.count >= 2 else { return nil }
            return values[1].string
        }
        switch await config("appendonly") {
        case "yes": checks.append(.ok("redis_aof", "appendonly yes (appendfsync \(await config("appendfsync") ?? "?"))"))
        case .some(let value):
            checks.append(
                .problem(
                    "redis_aof", "appendonly \(value): a Redis restart loses every task's state since the last snapshot",
                    fix: "enable AOF: CONFIG SET appendonly yes / appendonly yes in redis.conf"))
        case nil: checks.append(.unknown("redis_aof", "CONFIG GET appendonly is not allowed on this server; check redis.conf"))
        }
        switch await config("maxmemory-policy") {
        case "noeviction": checks.append(.ok("redis_eviction", "maxmemory-policy noeviction"))
        case .some(let value):
            checks.append(
                .problem(
                    "redis_eviction", "maxmemory-policy \(value): under memory pressure Redis would evict task state",
                    fix: "CONFIG SET maxmemory-policy noeviction / maxmemory-policy noeviction in redis.conf"))
        case nil: checks.append(.unknown("redis_eviction", "CONFIG GET maxmemory-policy is not allowed on this server; check redis.conf"))
        }
        // Redis 6 calls it hash-max-ziplist-value (7 answers both names).
        var listpackValue = await config("hash-max-listpack-value")
        if listpackValue == nil { listpackValue = await config("hash-max-ziplist-value") }
        switch listpackValue {
        case .some(let value):
            if let warning = RedisMemoryAdvice.hashListpackValueWarning(value) {
                let recommended = RedisMemoryAdvice.recommendedHashListpackValue
                checks.append(
                    .warning(
                        "redis_memory", warning,
                        fix: "CONFIG SET hash-max-listpack-value \(recommended) / hash-max-listpack-value \(recommended) in redis.conf"))
            } else {
                checks.append(.ok("redis_memory", "hash-max-listpack-value \(value)"))
            }
        case nil:
            checks.append(.unknown("redis_memory", "CONFIG GET hash-max-listpack-value is not allowed on this server; check redis.conf"))
        }
        if let time = try? await redis.send("TIME").array, time.count == 2, let seconds = Double(time[0].string ?? ""),
            let micros = Double(time[1].string ?? "")
        {
            let skew = Date().timeIntervalSince1970 - (seconds + micros / 1_000_000)
            if abs(skew) > 2 {
                checks.append(
                    .problem(
                        "clock_skew", String(format: "this machine's clock is %.1f s off Redis's", skew),
                        fix: "synchronise the clocks (NTP); leases use Redis time, but ages and --since use this clock"))
            } else {
                checks.append(.ok("clock_skew", String(format: "%.3f s off Redis's clock", skew)))
            }
        }
        let store = RedisTaskStore(redis: redis, settings: configuration.store)
        if let workers = try? await TaskQueries(store: store).workers() {
            let staleAfter = Double(configuration.store.workerStaleMilliseconds) / 1000
            let live = workers.filter { $0.heartbeatAgeSeconds <= staleAfter }
            let stale = workers.count - live.count
            let staleText = stale > 0 ? "; \(stale) stale heartbeat(s) older than \(staleAfter) s (dead workers)" : ""
            if live.isEmpty {
                checks.append(
                    .problem(
                        "workers", "no live worker\(staleText)", fix: "start one: `baton worker` (tasks wait in their queues until then)"))
            } else {
                checks.append(.ok("workers", "\(live.count) live worker(s)\(staleText)"))
            }
            if let leads = WorkerView.prewarmLeadMismatch(live) {
                let text = leads.sorted { $0.key > $1.key }.map { "\(DurationText.format(.milliseconds($0.key))) on \($0.value)" }
                checks.append(
                    .warning(
                        "prewarm_lead",
                        "live workers run with different sweeps.prewarm_lead: " + text.joined(separator: ", ")
                            + " (waits whose length lies between them get no waking_soon)",
                        fix: "give every worker the same sweeps.prewarm_lead (a rolling change settles once all run the new value)"))
            }
        }
        if let stuck = try? await TaskQueries(store: store).stuckOutboxes(olderThan: .seconds(60)) {
            checks.append(outboxCheck(stuck))
        }
        await redis.close()
        return checks
    }

    /// Messages committed over a minute ago that RabbitMQ has not taken (``TaskQueries/stuckOutboxes(olderThan:limit:)``).
    static func outboxCheck(_ stuck: [TaskQueries.StuckOutbox]) -> Check {
        guard let oldest = stuck.first else {
            return .ok("outbox", "no committed message has waited over a minute for RabbitMQ")
        }
        var tasksPerKey: [String: Int] = [:]
        for entry in stuck { for key in entry.routingKeys { tasksPerKey[key, default: 0] += 1 } }
        let keys = tasksPerKey.sorted { ($0.value, $1.key) > ($1.value, $0.key) }
        var named = keys.prefix(5).map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
        if keys.count > 5 { named += " and \(keys.count - 5) more queue(s)" }
        let age = DurationText.format(.milliseconds(oldest.ageMilliseconds / 1000 * 1000))
        return .warning(
            "outbox",
            "\(stuck.count) task(s) hold messages committed over a minute ago that RabbitMQ has not taken, by queue: \(named); "
                + "the oldest, task \(oldest.task), for \(age)",
            fix: "the workers' log says why: a step queue no worker has declared (start one that consumes it: `baton worker --queues "
                + "\(keys.prefix(3).map(\.key).joined(separator: ","))`, or cancel the tasks), or RabbitMQ refusing publishes "
                + "(a full queue, a memory or disk alarm: `baton queues`, `rabbitmqctl status`)")
    }

    static func redactedRedis(_ url: String) -> String {
        (try? RedisURL(parsing: url)).map { "\($0.host):\($0.port)/\($0.database)" } ?? url
    }

    // MARK: - RabbitMQ

    static func rabbitMQChecks(_ configuration: BatonConfiguration) async -> [Check] {
        let amqpConfiguration: AMQPConfiguration
        let connection: AMQPConnection
        do {
            var parsed = try AMQPConfiguration(url: configuration.amqpURL, connectionName: "baton-doctor")
            parsed.connectTimeout = .seconds(5)
            amqpConfiguration = parsed
            connection = try await AMQPConnection.connect(parsed, logger: Logger(label: "baton.cli"))
        } catch {
            return [
                .problem(
                    "rabbitmq", "cannot reach RabbitMQ: \(error)",
                    fix: "start RabbitMQ (`baton services start` locally) or point --amqp / BATON_AMQP_URL / amqp.url at it")
            ]
        }
        let url = amqpConfiguration.url
        var checks: [Check] = [.ok("rabbitmq", "reachable at \(url.redacted)")]
        var missing: [String] = []
        do {
            var channel = try await connection.openChannel()
            let exchanges = [
                Topology.submitExchange, Topology.unroutedExchange, Topology.stepsExchange, Topology.signalsExchange,
                Topology.deadExchange, Topology.eventsExchange,
            ]
            for exchange in exchanges {
                do { try await channel.checkExchange(exchange) } catch let error as AMQPError where error.serverCode == 404 {
                    missing.append("exchange \(exchange)")
                    channel = try await connection.openChannel()
                }
            }
            for queue in [Topology.deadQueue, Topology.signalsQueue, Topology.unroutedQueue] {
                do { _ = try await channel.inspectQueue(queue) } catch let error as AMQPError where error.serverCode == 404 {
                    missing.append("queue \(queue)")
                    channel = try await connection.openChannel()
                }
            }
            if missing.isEmpty {
                checks.append(.ok("topology", "exchanges and queues of DESIGN.md §3 present"))
            } else {
                checks.append(
                    .problem(
                        "topology", "missing: \(missing.joined(separator: ", "))",
                        fix: "start a worker once (`baton worker`): it declares the topology"))
            }
        } catch {
            checks.append(.unknown("topology", "cannot check: \(error)"))
        }
        await connection.close()

        let timeSlice = configuration.worker.protocolSettings.timeSlice
        let sliceMilliseconds = timeSlice.wholeMilliseconds
        let loopback = ["127.0.0.1", "localhost", "::1"].contains(url.host)
        let timeout: LocalServices.ConsumerTimeout =
            loopback
            ? await LocalServices().consumerTimeout(amqpPort: url.port)
            : .unknown(
                "\(url.host) is not this machine: without the management plugin the setting cannot be read remotely; "
                    + "check consumer_timeout in its rabbitmq.conf (3.10 default: 30 minutes)")
        switch timeout {
        case .milliseconds(let ms) where ms < sliceMilliseconds:
            checks.append(
                .problem(
                    "consumer_timeout",
                    "consumer_timeout \(ms) ms is below worker.time_slice \(sliceMilliseconds) ms: the broker closes the channel under "
                        + "steps that run their full slice (they still commit, but their deliveries are redelivered)",
                    fix: "raise consumer_timeout in rabbitmq.conf above \(sliceMilliseconds) ms, or lower worker.time_slice"))
        case .milliseconds(let ms):
            checks.append(.ok("consumer_timeout", "consumer_timeout \(ms) ms ≥ worker.time_slice \(sliceMilliseconds) ms"))
        case .disabled: checks.append(.ok("consumer_timeout", "consumer_timeout is off (no delivery timeout)"))
        case .unknown(let why): checks.append(.unknown("consumer_timeout", why))
        }
        return checks
    }

    // MARK: - Queues

    static func queueChecks(_ configuration: BatonConfiguration) async -> [Check] {
        guard let rows = try? await QueuesCommand.collect(configuration: configuration, extra: []) else {
            return [.unknown("queue_headroom", "cannot read the queues")]
        }
        var checks: [Check] = []
        let cap = configuration.worker.queueSettings.stepQueueMaxLength
        let full = rows.filter { row in
            row.kind == "steps" && cap > 0 && Double(row.ready ?? 0) + Double(row.unacked ?? 0) >= 0.8 * Double(cap)
        }
        if full.isEmpty {
            checks.append(.ok("queue_headroom", "every step queue is below 80 % of queues.step_max_length (\(cap))"))
        } else {
            let names = full.map { "\($0.queue) (\($0.ready ?? 0) ready)" }.joined(separator: ", ")
            checks.append(
                .problem(
                    "queue_headroom", "nearly full (cap \(cap)): \(names); at the cap publishes are refused",
                    fix: "add workers for these queues (`baton worker --queues …`) or raise queues.step_max_length"))
        }
        let stranded = rows.filter { $0.exists && ($0.ready ?? 0) > 0 && $0.consumers == 0 }
        if stranded.isEmpty {
            checks.append(.ok("queue_consumers", "no queue holds messages without a consumer"))
        } else {
            let names = stranded.prefix(10).map { "\($0.queue) (\($0.ready ?? 0))" }.joined(separator: ", ")
            checks.append(
                .warning(
                    "queue_consumers", "messages wait with no consumer in \(stranded.count) queue(s): \(names)",
                    fix: "start a worker that serves them (`baton worker`), or delete queues nothing uses any more"))
        }
        return checks
    }
}
