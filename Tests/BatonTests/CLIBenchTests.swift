import Baton
import Foundation
import Logging
import RedisClient
import TestSupport
import Testing

/// `baton bench idle` and `baton bench latency` at small sizes: the output's structure and the cleanup (no timing).
extension CLITests {
    /// The keys left under a run's prefix (`SCAN`, the whole keyspace).
    static func keysLeft(prefix: String) async throws -> [String] {
        let redis = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Logger(label: "baton.cli-bench-tests"))
        defer { Task { await redis.close() } }
        return try await Harness.scanKeys(redis, matching: prefix + "*")
    }

    @Test(.enabled(if: TestServers.available)) func benchIdleReportsWaitingTasksAndCleansUp() async throws {
        let run = try await Self.baton(["bench", "idle", "--tasks", "50", "--window", "1", "--json"])
        #expect(run.status == 0, "\(run.output)\n\(run.error)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
        #expect(object["bench"] as? String == "idle")
        #expect(object["tasks"] as? Int == 50)
        #expect(object["waiting"] as? Int == 50)
        #expect(object["verified"] as? Bool == true)
        #expect((object["failures"] as? [Any])?.isEmpty == true)
        // A waiting task holds no message and no worker slot.
        #expect(object["in_flight"] as? Int == 0)
        #expect((object["queue_ready"] as? Int ?? 0) == 0)
        #expect((object["queue_unacked"] as? Int ?? 0) == 0)
        for key in [
            "bytes_per_task", "accounted_bytes_per_task", "bytes_for_10m", "worker_cpu_ms_per_s", "redis_cpu_ms_per_s",
            "broker_cpu_ms_per_s", "idle_worker_cpu_ms_per_s", "used_memory_before", "used_memory_after",
        ] {
            #expect(object[key] is NSNumber, "\(key) missing")
        }
        // One waiting task's keys: its hash, its events and its checkpoint at least; the run's waiting index and timers.
        let taskKeys = try #require(object["task_keys"] as? [[String: Any]])
        let names = Set(taskKeys.compactMap { $0["key"] as? String })
        #expect(names.isSuperset(of: [":task", ":events", ":ckpt:1"]), "\(names)")
        #expect(taskKeys.allSatisfy { ($0["bytes"] as? Int ?? 0) > 0 })
        let shared = try #require(object["shared_keys"] as? [[String: Any]]).compactMap { $0["key"] as? String }
        #expect(shared.contains { $0.hasSuffix(":waiting") && $0.hasPrefix("index:") })
        #expect(shared.contains { $0.hasPrefix("timers:") })
        // The cleanup: nothing of the run is left.
        let prefix = try #require(object["key_prefix"] as? String)
        #expect(prefix.hasPrefix("bench-idle-"))
        #expect(object["leftover_keys"] as? Int == 0)
        #expect(try await Self.keysLeft(prefix: prefix).isEmpty)

        let text = try await Self.baton(["bench", "idle", "--tasks", "5", "--window", "1"])
        #expect(text.status == 0, "\(text.output)\n\(text.error)")
        for part in ["bytes/task", "one waiting task's keys:", "CPU ms/s", "10 million waiting tasks:", "0 left", "verified yes"] {
            #expect(text.output.contains(part), "\(part) missing in \(text.output)")
        }
    }

    @Test(.enabled(if: TestServers.available)) func benchLatencyReportsPercentilesAndCleansUp() async throws {
        let run = try await Self.baton(["bench", "latency", "--hops", "50", "--steps", "10", "--json"])
        #expect(run.status == 0, "\(run.output)\n\(run.error)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
        #expect(object["bench"] as? String == "latency")
        #expect(object["chains"] as? Int == 5)
        #expect(object["steps"] as? Int == 10)
        #expect(object["hops"] as? Int == 50)
        #expect(object["verified"] as? Bool == true)
        #expect(object["hops_per_s"] is NSNumber)
        // Per chain of 10 steps: 10 commit → commit intervals (from the submit), 9 step → step ones, 10 steps' own code.
        for (measure, samples) in [("commit_to_commit_ms", 50), ("step_to_step_ms", 45), ("step_code_ms", 50)] {
            let percentiles = try #require(object[measure] as? [String: Any], "\(measure) missing")
            for key in ["p50", "p90", "p99"] { #expect(percentiles[key] is NSNumber, "\(measure).\(key) missing") }
            #expect(percentiles["samples"] as? Int == samples, "\(measure)")
        }
        let prefix = try #require(object["key_prefix"] as? String)
        #expect(prefix.hasPrefix("bench-latency-"))
        #expect(object["leftover_keys"] as? Int == 0)
        #expect(try await Self.keysLeft(prefix: prefix).isEmpty)

        let text = try await Self.baton(["bench", "latency", "--hops", "5"])
        #expect(text.status == 0, "\(text.output)\n\(text.error)")
        for part in ["hops/s", "commit → commit p50", "step → step p50", "verified yes", "0 keys of the run left"] {
            #expect(text.output.contains(part), "\(part) missing in \(text.output)")
        }
    }

    @Test func benchIdleAndLatencyRejectBadSizes() async throws {
        let idle = try await Self.baton(["bench", "idle", "--tasks", "0"])
        #expect(idle.status == 64)
        #expect(idle.error.contains("--tasks"))
        let latency = try await Self.baton(["bench", "latency", "--hops", "0"])
        #expect(latency.status == 64)
        #expect(latency.error.contains("--hops"))
    }
}
