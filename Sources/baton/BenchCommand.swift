import ArgumentParser
import Baton
import Foundation
import Logging

/// `baton bench …`: benchmarks against the configured servers.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure Baton and the physical limit of this machine.", subcommands: [Raw.self])

    struct Raw: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The raw hop loop (consume → EVALSHA → publish with confirm → ack) on Baton's AMQP and Redis wrappers.")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Chains in flight.") var chains: Int = 64
        @Option(help: "Total hops.") var hops: Int = 20_000
        @Option(help: "batched (drain buffered deliveries, pipeline their Redis calls) or unbatched.") var mode: String = "batched"
        @Option(help: "Consumer prefetch (default: 2 × chains; 1 for a single chain).") var prefetch: Int?
        @Flag(name: .customLong("json"), help: "Print one JSON object per run.") var json = false

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
            let bench = RawBench(amqpURL: connection.amqpURL, redisURL: connection.redisURL, logger: Logger(label: "baton.bench"))
            let result: RawBench.Result
            do {
                result = try await bench.run(options)
            } catch {
                Terminal.error("\(error)")
                throw ExitCode(2)
            }
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
