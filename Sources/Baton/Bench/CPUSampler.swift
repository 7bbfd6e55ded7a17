import Foundation

/// CPU time of this process and of the broker and Redis processes on this machine (from /proc), so a
/// benchmark can report CPU per hop for each.
public struct CPUSample: Sendable {
    public var selfMicros: Int64
    public var brokerMicros: Int64
    public var redisMicros: Int64

    /// Takes a sample now.
    public static func now() -> CPUSample {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let own = Int64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + Int64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
        return CPUSample(selfMicros: own, brokerMicros: processCPU(named: ["beam.smp"]), redisMicros: processCPU(named: ["redis-server"]))
    }

    public static func - (a: CPUSample, b: CPUSample) -> CPUSample {
        CPUSample(
            selfMicros: a.selfMicros - b.selfMicros, brokerMicros: a.brokerMicros - b.brokerMicros,
            redisMicros: a.redisMicros - b.redisMicros)
    }

    /// Total user+system CPU of every process whose `comm` is one of `names`, in microseconds.
    public static func processCPU(named names: Set<String>) -> Int64 {
        let ticks = Int64(sysconf(Int32(_SC_CLK_TCK)))
        guard ticks > 0, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        var total: Int64 = 0
        for entry in entries where entry.first?.isNumber == true {
            guard let comm = try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8),
                names.contains(comm.trimmingCharacters(in: .whitespacesAndNewlines)),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command: state(0) ppid(1) … utime(11) stime(12)
            guard fields.count > 12, let user = Int64(fields[11]), let system = Int64(fields[12]) else { continue }
            total += (user + system) * 1_000_000 / ticks
        }
        return total
    }
}

/// Percentiles of a list of durations in milliseconds.
public struct LatencySummary: Sendable {
    public var p50: Double
    public var p99: Double

    public init(_ samples: [Double]) {
        let sorted = samples.sorted()
        func percentile(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
        }
        p50 = percentile(0.5)
        p99 = percentile(0.99)
    }
}

extension Duration {
    var milliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
