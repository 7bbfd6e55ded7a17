import Foundation

/// CPU time of this process and of the broker and Redis processes on this machine (from /proc), so a
/// benchmark can report CPU per hop for each.
public struct CPUSample: Sendable {
    public var selfMicros: Int64
    public var brokerMicros: Int64
    public var redisMicros: Int64
    /// CPU per process id, so a difference counts only processes alive at both samples (a broker or Redis of
    /// someone else's that stops mid-run does not make the figure negative).
    var brokerByPID: [Int32: Int64] = [:]
    var redisByPID: [Int32: Int64] = [:]

    /// This process's CPU time (user + system) so far, in microseconds.
    public static func ownMicros() -> Int64 {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + Int64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
    }

    /// Takes a sample now; with ports, only the broker and Redis processes listening on them count (else every
    /// process of that name on the machine).
    public static func now(brokerPort: Int? = nil, redisPort: Int? = nil) -> CPUSample {
        let own = ownMicros()
        let listeners = listeningProcesses(ports: Set([brokerPort, redisPort].compactMap { $0 }))
        func only(_ all: [Int32: Int64], port: Int?) -> [Int32: Int64] {
            guard let port, let pid = listeners[port], let cpu = all[pid] else { return all }
            return [pid: cpu]
        }
        let broker = only(processCPU(named: ["beam.smp"]), port: brokerPort)
        let redis = only(processCPU(named: ["redis-server"]), port: redisPort)
        return CPUSample(
            selfMicros: own, brokerMicros: broker.values.reduce(0, +), redisMicros: redis.values.reduce(0, +), brokerByPID: broker,
            redisByPID: redis)
    }

    public static func - (a: CPUSample, b: CPUSample) -> CPUSample {
        func delta(_ later: [Int32: Int64], _ earlier: [Int32: Int64]) -> Int64 {
            later.reduce(0) { sum, entry in sum + (earlier[entry.key].map { entry.value - $0 } ?? 0) }
        }
        return CPUSample(
            selfMicros: a.selfMicros - b.selfMicros, brokerMicros: delta(a.brokerByPID, b.brokerByPID),
            redisMicros: delta(a.redisByPID, b.redisByPID))
    }

    /// The process listening on each of `ports` (TCP, IPv4 or IPv6), from /proc/net and the processes' socket
    /// descriptors of beam.smp and redis-server.
    static func listeningProcesses(ports: Set<Int>) -> [Int: Int32] {
        guard !ports.isEmpty else { return [:] }
        var inodes: [String: Int] = [:]
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                // local_address(1) … st(3) … inode(9); state 0A is LISTEN.
                guard fields.count > 9, fields[3] == "0A", let colon = fields[1].lastIndex(of: ":"),
                    let port = Int(fields[1][fields[1].index(after: colon)...], radix: 16), ports.contains(port)
                else { continue }
                inodes["socket:[\(fields[9])]"] = port
            }
        }
        guard !inodes.isEmpty, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [:] }
        var out: [Int: Int32] = [:]
        for entry in entries {
            guard let pid = Int32(entry), let comm = try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8),
                ["beam.smp", "redis-server"].contains(comm.trimmingCharacters(in: .whitespacesAndNewlines)),
                let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(entry)/fd")
            else { continue }
            for fd in fds {
                if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/fd/\(fd)"),
                    let port = inodes[target]
                {
                    out[port] = pid
                }
            }
        }
        return out
    }

    /// User+system CPU of every process whose `comm` is one of `names`, in microseconds, by process id.
    public static func processCPU(named names: Set<String>) -> [Int32: Int64] {
        let ticks = Int64(sysconf(Int32(_SC_CLK_TCK)))
        guard ticks > 0, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [:] }
        var out: [Int32: Int64] = [:]
        for entry in entries {
            guard let pid = Int32(entry),
                let comm = try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8),
                names.contains(comm.trimmingCharacters(in: .whitespacesAndNewlines)),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command: state(0) ppid(1) … utime(11) stime(12)
            guard fields.count > 12, let user = Int64(fields[11]), let system = Int64(fields[12]) else { continue }
            out[pid] = (user + system) * 1_000_000 / ticks
        }
        return out
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
