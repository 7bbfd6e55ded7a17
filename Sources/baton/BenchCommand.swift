import ArgumentParser
import Baton
import Foundation
import Logging

/// `baton bench …`: benchmarks against the configured servers.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure Baton and the physical limit of this machine.",
        subcommands: [Raw.self, StepChain.self, Timers.self, Idle.self, Latency.self])

    /// Runs a benchmark; a failure to reach the servers (or any other) is exit code 2 with its message.
    static func measure<R>(_ body: () async throws -> R) async throws -> R {
        do {
            return try await body()
        } catch {
            Terminal.error("\(error)")
            throw ExitCode(2)
        }
    }

    struct StepChain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stepchain",
            abstract: "The step chain through the full protocol (in-process workers), verified, beside the raw loop.")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Tasks (chains) in flight.") var tasks: Int = 200
        @Option(help: "Steps per task.") var steps: Int = 20
        @Option(help: "Bytes of the record each step appends to the state (the state grows to steps × this).")
        var recordBytes: Int = 200
        @Option(help: "Workers (in this process, each with its own connections).") var workers: Int = 1
        @Option(help: "Steps each worker runs at once.") var concurrency: Int = 256
        @Flag(name: .customLong("no-raw"), help: "Skip the raw loop.") var noRaw = false
        @Flag(name: .customLong("no-speculation"), help: "Claim every step first (worker.speculative_steps false).")
        var noSpeculation = false
        @Option(
            help:
                "Rounds to run, each the raw loop then the chain; with more than one, the median and range of each figure follow (the host's noise moves one round by ±10 %)."
        )
        var rounds: Int = 1
        @Flag(name: .customLong("json"), help: "Print one JSON object per round (and one for the medians after several).") var json = false

        func validate() throws {
            guard tasks >= 1, steps >= 1, workers >= 1, concurrency >= 1 else {
                throw ValidationError("--tasks, --steps, --workers, --concurrency must be ≥ 1")
            }
            guard (1...50).contains(rounds) else { throw ValidationError("--rounds must be between 1 and 50") }
            guard (16...65_536).contains(recordBytes) else { throw ValidationError("--record-bytes must be between 16 and 65536") }
        }

        func run() async throws {
            var options = StepChainBench.Options()
            options.tasks = tasks
            options.steps = steps
            options.recordBytes = recordBytes
            options.workers = workers
            options.concurrency = concurrency
            options.prefetch = UInt16(clamping: concurrency)
            options.runRaw = !noRaw
            options.speculativeSteps = !noSpeculation
            var logger = Logger(label: "baton.bench")
            logger.logLevel = .warning
            let bench = StepChainBench(amqpURL: connection.amqpURL, redisURL: connection.redisURL, registry: .examples, logger: logger)
            var results: [StepChainBench.Result] = []
            for round in 1...rounds {
                let result = try await BenchCommand.measure { try await bench.run(options) }
                results.append(result)
                if json {
                    try printJSON(result)
                } else {
                    var line = rounds > 1 ? "round \(round)/\(rounds)  " : ""
                    line += String(
                        format:
                            "stepchain  tasks %d × steps %d = %d hops  %.0f hops/s  p50 %.2f ms  p99 %.2f ms  CPU ms/hop: worker %.3f broker %.3f redis %.3f  verified %@",
                        result.tasks, result.steps, result.hops, result.hopsPerSecond, result.p50Milliseconds, result.p99Milliseconds,
                        result.workerCPUMillisecondsPerHop, result.brokerCPUMillisecondsPerHop, result.redisCPUMillisecondsPerHop,
                        result.verified ? "yes" : "NO")
                    line += "  speculative \(result.speculativeSteps) (claimed late \(result.claimedLate))"
                    if let raw = result.rawHopsPerSecond, let ratio = result.ratioToRaw {
                        line += String(
                            format: "\nraw (same run, %d chains batched)  %.0f hops/s   Baton / raw = %.2f", result.tasks, raw, ratio)
                    }
                    if let worker = result.rawWorkerCPUMillisecondsPerHop, let broker = result.rawBrokerCPUMillisecondsPerHop,
                        let redis = result.rawRedisCPUMillisecondsPerHop
                    {
                        line += String(format: "  CPU ms/hop: client %.3f broker %.3f redis %.3f", worker, broker, redis)
                    }
                    if let cpu = result.cpuPerHopToRaw {
                        line += String(format: "\nCPU per hop, chain / raw = %.2f", cpu)
                    }
                    print(line)
                    for failure in result.failures { print("  failed: \(failure)") }
                }
            }
            if rounds > 1 {
                let summary = StepChainBench.Summary(results)
                if json {
                    try printJSON(summary)
                } else {
                    print(Self.summaryText(summary))
                }
            }
            if !results.allSatisfy(\.verified) { throw ExitCode(1) }
        }

        /// The medians line of `--rounds`: "median (min–max)" of each figure.
        static func summaryText(_ summary: StepChainBench.Summary) -> String {
            func spread(_ value: StepChainBench.Summary.Spread?, _ format: String) -> String {
                guard let value else { return "–" }
                return String(format: "\(format) (\(format)–\(format))", value.median, value.min, value.max)
            }
            var text = "median of \(summary.rounds) rounds (min–max)  \(spread(summary.hopsPerSecond, "%.0f")) hops/s"
            text += "  CPU ms/hop: worker \(spread(summary.workerCPUMillisecondsPerHop, "%.3f"))"
            text += " broker \(spread(summary.brokerCPUMillisecondsPerHop, "%.3f"))"
            text += " redis \(spread(summary.redisCPUMillisecondsPerHop, "%.3f"))"
            if summary.ratioToRaw != nil {
                text += "\nraw \(spread(summary.rawHopsPerSecond, "%.0f")) hops/s   Baton / raw (each round's own pair) = "
                text += spread(summary.ratioToRaw, "%.2f")
                text += "\nCPU per hop, chain / raw (each round's own pair) = \(spread(summary.cpuPerHopToRaw, "%.2f"))"
            }
            return text
        }
    }

    struct Timers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "timers",
            abstract: "Many sleeper tasks due within the same second (in-process workers): p50/p99 lateness of their wake-ups.")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Sleeping tasks, all due at the same instant.") var tasks: Int = 1000
        @Option(help: "Seconds from the submit to the common due time (every task must be asleep by then).") var lead: Int = 15
        @Option(help: "Workers (in this process, each with its own connections).") var workers: Int = 1
        @Flag(name: .customLong("json"), help: "Print one JSON object per run.") var json = false

        func validate() throws {
            guard tasks >= 1, workers >= 1, lead >= 1 else { throw ValidationError("--tasks, --workers and --lead must be ≥ 1") }
        }

        func run() async throws {
            var options = TimerBench.Options()
            options.tasks = tasks
            options.workers = workers
            options.lead = .seconds(lead)
            var logger = Logger(label: "baton.bench")
            logger.logLevel = .warning
            let bench = TimerBench(amqpURL: connection.amqpURL, redisURL: connection.redisURL, logger: logger)
            let result = try await BenchCommand.measure { try await bench.run(options) }
            if json {
                try printJSON(result)
            } else {
                print(
                    String(
                        format:
                            "timers  %d sleepers due at once, %d worker(s)  lateness of the resumed step p50 %.0f ms  p99 %.0f ms  max %.0f ms  (timer fired: p50 %.0f ms  p99 %.0f ms)  wall %.1f s  verified %@",
                        result.tasks, result.workers, result.p50Milliseconds, result.p99Milliseconds, result.maxMilliseconds,
                        result.wakeP50Milliseconds, result.wakeP99Milliseconds, result.wallSeconds, result.verified ? "yes" : "NO"))
                if result.asleepTasks == result.tasks {
                    print(
                        String(
                            format:
                                "  while all %d slept: %d steps in flight, queue ready %@ / unacked %@, worker CPU %.1f ms/s (idle before the submit: %.1f ms/s)",
                            result.asleepTasks, result.asleepInFlight, result.asleepReady.map(String.init) ?? "n/a",
                            result.asleepUnacked.map(String.init) ?? "n/a", result.asleepCPUMillisecondsPerSecond,
                            result.idleCPUMillisecondsPerSecond))
                } else {
                    print(
                        "  only \(result.asleepTasks) of \(result.tasks) were asleep 6.5 s before the due time: raise --lead to measure them asleep"
                    )
                }
                if result.lateSleepers > 0 {
                    print("  \(result.lateSleepers) tasks fell asleep after their due time: raise --lead")
                }
                for failure in result.failures { print("  failed: \(failure)") }
            }
            if !result.verified { throw ExitCode(1) }
        }
    }

    struct Idle: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "idle",
            abstract:
                "Many tasks waiting for a signal (in-process workers): Redis memory per waiting task, messages held, CPU while they wait.")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Waiting tasks.") var tasks: Int = 100_000
        @Option(help: "Seconds of the quiet window over which CPU is measured while every task waits.") var window: Int = 30
        @Option(help: "Workers (in this process, each with its own connections).") var workers: Int = 1
        @Flag(name: .customLong("json"), help: "Print one JSON object per run.") var json = false

        func validate() throws {
            guard tasks >= 1, workers >= 1, window >= 1 else { throw ValidationError("--tasks, --workers and --window must be ≥ 1") }
        }

        func run() async throws {
            var options = IdleBench.Options()
            options.tasks = tasks
            options.workers = workers
            options.window = .seconds(window)
            var logger = Logger(label: "baton.bench")
            logger.logLevel = .warning
            let bench = IdleBench(amqpURL: connection.amqpURL, redisURL: connection.redisURL, logger: logger)
            let result = try await BenchCommand.measure { try await bench.run(options) }
            if json {
                try printJSON(result)
            } else {
                func keys(_ list: [IdleBench.KeyUsage]) -> String {
                    list.map { "\($0.key) (\($0.type), \($0.encoding)) \($0.bytes) B" }.joined(separator: ", ")
                }
                print(
                    String(
                        format:
                            "idle  %d waiting tasks (signal wait with a timeout), %d worker(s) in this process, all waiting %.1f s after the submit",
                        result.tasks, result.workers, result.settleSeconds))
                print(
                    String(
                        format: "  memory  used_memory %+.1f MiB = %.0f bytes/task  (MEMORY USAGE cross-check: %.0f bytes/task)",
                        Double(result.usedMemoryAfter - result.usedMemoryBefore) / 1_048_576, result.bytesPerTask,
                        result.accountedBytesPerTask))
                print("  one waiting task's keys: \(keys(result.taskKeys))")
                // The shared keys by kind (`timers:{0}` … `timers:{15}` as `timers:{*}`), with their share per task.
                var kinds: [String: (count: Int, bytes: Int, encoding: String)] = [:]
                for key in result.sharedKeys {
                    let kind = key.key.replacing(/\{[0-9]+\}/, with: "{*}")
                    let known = kinds[kind] ?? (0, 0, key.encoding)
                    kinds[kind] = (known.count + 1, known.bytes + key.bytes, known.encoding)
                }
                let shared = kinds.sorted { $0.value.bytes > $1.value.bytes }.map { kind, value in
                    String(
                        format: "%@ ×%d (%@) %.0f B/task", kind, value.count, value.encoding,
                        Double(value.bytes) / Double(max(1, result.tasks)))
                }
                print("  the run's shared keys: \(shared.joined(separator: ", "))")
                print(
                    "  while every task waited: queue ready \(result.queueReady.map(String.init) ?? "n/a") / unacked \(result.queueUnacked.map(String.init) ?? "n/a"), steps in flight \(result.inFlight)"
                )
                print(
                    String(
                        format:
                            "  CPU ms/s over %.0f s while they waited: worker %.1f  redis %.1f  broker %.1f  (idle before the submit: worker %.1f  redis %.1f  broker %.1f)",
                        result.windowSeconds, result.workerCPUMillisecondsPerSecond, result.redisCPUMillisecondsPerSecond,
                        result.brokerCPUMillisecondsPerSecond, result.idleWorkerCPUMillisecondsPerSecond,
                        result.idleRedisCPUMillisecondsPerSecond, result.idleBrokerCPUMillisecondsPerSecond))
                print(
                    String(
                        format: "  10 million waiting tasks: %.1f GiB of Redis memory", result.bytesFor10Million / 1_073_741_824))
                print(
                    "  cleanup: \(result.deletedKeys) keys deleted, \(result.leftoverKeys) left  verified \(result.verified ? "yes" : "NO")"
                )
                for failure in result.failures { print("  failed: \(failure)") }
            }
            if !result.verified { throw ExitCode(1) }
        }
    }

    struct Latency: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "latency",
            abstract: "One step chain at a time (T = 1, in-process worker): p50/p90/p99 of the step transition and hops/s.")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Step transitions to measure (chains run one after another until this many steps ran).") var hops: Int = 2000
        @Option(help: "Steps per chain.") var steps: Int = 20
        @Flag(name: .customLong("json"), help: "Print one JSON object per run.") var json = false

        func validate() throws {
            guard hops >= 1, steps >= 1 else { throw ValidationError("--hops and --steps must be ≥ 1") }
        }

        func run() async throws {
            var options = LatencyBench.Options()
            options.hops = hops
            options.steps = steps
            var logger = Logger(label: "baton.bench")
            logger.logLevel = .warning
            let bench = LatencyBench(amqpURL: connection.amqpURL, redisURL: connection.redisURL, logger: logger)
            let result = try await BenchCommand.measure { try await bench.run(options) }
            if json {
                try printJSON(result)
            } else {
                let c = result.commitToCommit
                let s = result.stepToStep
                print(
                    String(
                        format:
                            "latency  %d chains × %d steps = %d hops, one at a time  %.0f hops/s  step transition: commit → commit p50 %.1f  p90 %.1f  p99 %.1f ms (Redis time, ms resolution)  step → step p50 %.2f  p90 %.2f  p99 %.2f ms (worker clock)  CPU ms/hop: worker %.3f broker %.3f redis %.3f  verified %@",
                        result.chains, result.steps, result.hops, result.hopsPerSecond, c.p50, c.p90, c.p99, s.p50, s.p90, s.p99,
                        result.workerCPUMillisecondsPerHop, result.brokerCPUMillisecondsPerHop, result.redisCPUMillisecondsPerHop,
                        result.verified ? "yes" : "NO"))
                print(
                    String(
                        format: "  of a hop, the step's own code: p50 %.3f  p99 %.3f ms; the rest is the protocol's", result.stepCode.p50,
                        result.stepCode.p99))
                print("  cleanup: \(result.leftoverKeys) keys of the run left")
                for failure in result.failures { print("  failed: \(failure)") }
            }
            if !result.verified { throw ExitCode(1) }
        }
    }

    struct Raw: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The raw hop loop (consume → EVALSHA → publish with confirm → ack) on Baton's AMQP and Redis wrappers.")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Chains in flight.") var chains: Int = 64
        @Option(help: "Total hops.") var hops: Int = 20_000
        @Option(help: "batched (drain buffered deliveries, pipeline their Redis calls) or unbatched.") var mode: String = "batched"
        @Option(help: "Consumer prefetch (default: 2 × chains; 1 for a single chain).") var prefetch: Int?
        @Flag(name: .customLong("json"), help: "Print one JSON object per run.") var json = false
        @Flag(name: .customLong("step-queue-args"), help: "Use the queue arguments of Baton's step queues, and mandatory publishes.")
        var stepQueueArgs = false

        func validate() throws {
            guard chains >= 1, hops >= chains else { throw ValidationError("--chains must be ≥ 1 and --hops ≥ --chains") }
            guard mode == "batched" || mode == "unbatched" else { throw ValidationError("--mode is batched or unbatched") }
        }

        func run() async throws {
            var options = RawBench.Options()
            options.chains = chains
            options.hops = hops
            options.batched = mode == "batched"
            options.prefetch = prefetch.map { UInt16(clamping: $0) }
            options.stepQueueArguments = stepQueueArgs
            let bench = RawBench(amqpURL: connection.amqpURL, redisURL: connection.redisURL, logger: Logger(label: "baton.bench"))
            let result = try await BenchCommand.measure { try await bench.run(options) }
            if json {
                try printJSON(result)
            } else {
                print(
                    String(
                        format:
                            "raw %@  chains %d  hops %d  %.0f hops/s  p50 %.2f ms  p99 %.2f ms  CPU µs/hop: client %.1f broker %.1f redis %.1f  avg batch %.1f  verified %@",
                        result.mode, result.chains, result.hops, result.hopsPerSecond, result.p50Milliseconds, result.p99Milliseconds,
                        result.workerCPUMicrosPerHop, result.brokerCPUMicrosPerHop, result.redisCPUMicrosPerHop, result.averageBatch,
                        result.verified ? "yes" : "NO"))
            }
            if !result.verified { throw ExitCode(1) }
        }
    }
}
