import Foundation
import Synchronization

/// One line of an effects sink file (`<run>.effects.jsonl`): one attempt at a keyed external effect.
public struct EffectEntry: Codable, Sendable, Hashable {
    /// What the sink did with the attempt, as an idempotent external API (Stripe's `Idempotency-Key`) would.
    public enum Outcome: String, Codable, Sendable {
        /// The first attempt with this key: the effect happened.
        case applied
        /// The key was applied before: nothing happened again (a re-run after a crash, or a zombie's late call).
        case replayed
        /// A new key whose fencing token is below one the sink already saw for the task: refused (a stale writer).
        case fenced
    }

    public var run: String
    public var task: String
    public var step: String
    /// The seq the step commits when it succeeds (the task's seq before the step, plus one).
    public var seq: Int64
    public var key: String
    public var token: Int64
    public var attempt: Int64
    public var outcome: Outcome
    /// Wall-clock time of the append (Unix ms; informational only: verify orders entries by file position).
    public var at: Int64
    public var pid: Int32

    public init(
        run: String, task: String, step: String, seq: Int64, key: String, token: Int64, attempt: Int64, outcome: Outcome, at: Int64 = 0,
        pid: Int32 = 0
    ) {
        self.run = run
        self.task = task
        self.step = step
        self.seq = seq
        self.key = key
        self.token = token
        self.attempt = attempt
        self.outcome = outcome
        self.at = at
        self.pid = pid
    }
}

/// The effects sink of verification runs: an append-only file per run outside Redis, written with `O_APPEND` and one
/// `fsync` per entry, that stands for an idempotent external API. Every attempt is recorded; the first with a key is
/// `applied`, later ones `replayed`; a new key with a fencing token below one already seen for its task is `fenced`.
/// Processes share the file under `flock`, each reading the entries the others appended since its last call, so the
/// decision and the record are one atomic append. `baton verify` counts effects from this file, never from Redis.
///
/// It is for verification runs (chaos, crash tests), not the hot path: each effect costs an `fsync`. The blocking
/// file calls run on a dispatch queue of the sink's own, never on Swift's cooperative pool.
public final class EffectsSink: Sendable {
    /// The environment variable naming the sinks' directory on workers.
    public static let directoryEnvironment = "BATON_EFFECTS_DIR"

    public let path: String
    public let run: String
    private let queue: DispatchQueue
    private let state = Mutex(State())

    private struct State {
        var fd: Int32 = -1
        var offset: Int = 0
        var partial: [UInt8] = []
        var applied: Set<String> = []
        var maxToken: [String: Int64] = [:]
    }

    private static let sinks = Mutex<[String: EffectsSink]>([:])

    /// The file of `run` in `directory`.
    public static func path(directory: String, run: String) -> String {
        (directory.hasSuffix("/") ? directory : directory + "/") + run + ".effects.jsonl"
    }

    /// The process's sink for `run` (one per file, so this process's concurrent steps share its index).
    /// `directory` nil: `BATON_EFFECTS_DIR`. Throws a clear error when neither names a directory or the run id is
    /// not a valid name.
    public static func shared(run: String, directory: String?) throws -> EffectsSink {
        guard TaskID.isValidName(run) else {
            throw BatonError(
                .invalidMessage, "the run id '\(run)' is not valid: use 1–100 letters, digits, '-', '_' or '.'", field: "input.run")
        }
        guard let directory = directory ?? ProcessInfo.processInfo.environment[directoryEnvironment], !directory.isEmpty else {
            throw BatonError(
                .invalidMessage,
                "the task asks for effects of run '\(run)' but names no sink: set \(directoryEnvironment) on the worker or 'effects_dir' in the input",
                field: "input.effects_dir")
        }
        let path = path(directory: directory, run: run)
        return sinks.withLock { sinks in
            if let sink = sinks[path] { return sink }
            let sink = EffectsSink(path: path, run: run)
            sinks[path] = sink
            return sink
        }
    }

    /// A sink of its own on `path` (agents use ``shared(run:directory:)``, one per file per process; two instances
    /// on one file behave as two processes would).
    public init(path: String, run: String) {
        self.path = path
        self.run = run
        queue = DispatchQueue(label: "baton.effects-sink")
    }

    deinit {
        state.withLock { if $0.fd >= 0 { close($0.fd) } }
    }

    /// Performs the effect `key` of `task` (records the attempt; the outcome says whether it happened now).
    public func apply(task: String, step: String, seq: Int64, key: String, token: Int64, attempt: Int64) async throws
        -> EffectEntry.Outcome
    {
        let entry = EffectEntry(
            run: run, task: task, step: step, seq: seq, key: key, token: token, attempt: attempt, outcome: .applied,
            at: Int64(Date().timeIntervalSince1970 * 1000), pid: getpid())
        return try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try self.append(entry) })
            }
        }
    }

    private func append(_ attempt: EffectEntry) throws -> EffectEntry.Outcome {
        try state.withLock { state in
            if state.fd < 0 {
                state.fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
                guard state.fd >= 0 else {
                    throw StepError.retryable(
                        "cannot open the effects sink \(path): \(String(cString: strerror(errno)))", bucket: "tool_error")
                }
            }
            let fd = state.fd
            guard flock(fd, LOCK_EX) == 0 else {
                throw StepError.retryable("cannot lock the effects sink \(path): \(String(cString: strerror(errno)))", bucket: "tool_error")
            }
            defer { flock(fd, LOCK_UN) }
            // What the other processes appended since this one last looked.
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(state.offset)) }
                guard n > 0 else { break }
                state.offset += n
                state.partial.append(contentsOf: buffer[0..<n])
                while let newline = state.partial.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = state.partial[..<newline]
                    if let entry = try? JSONCoding.decoder.decode(EffectEntry.self, from: Data(line)) { Self.index(entry, &state) }
                    state.partial.removeSubrange(...newline)
                }
            }
            var entry = attempt
            if state.applied.contains(entry.key) {
                entry.outcome = .replayed
            } else if let seen = state.maxToken[entry.task], entry.token < seen {
                entry.outcome = .fenced
            }
            var bytes = Array(try JSONCoding.encoder.encode(entry))
            bytes.append(UInt8(ascii: "\n"))
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == bytes.count else {
                throw StepError.retryable("short write to the effects sink \(path)", bucket: "tool_error")
            }
            guard fsync(fd) == 0 else {
                throw StepError.retryable(
                    "fsync of the effects sink \(path) failed: \(String(cString: strerror(errno)))", bucket: "tool_error")
            }
            state.offset += bytes.count
            Self.index(entry, &state)
            return entry.outcome
        }
    }

    private static func index(_ entry: EffectEntry, _ state: inout State) {
        if entry.outcome == .applied { state.applied.insert(entry.key) }
        state.maxToken[entry.task] = max(state.maxToken[entry.task] ?? entry.token, entry.token)
    }

    /// The entries of a sink file in file order, and the lines that are not entries (1-based line numbers).
    /// A missing file is an empty sink.
    public static func read(path: String) throws -> (entries: [EffectEntry], malformedLines: [Int]) {
        guard FileManager.default.fileExists(atPath: path) else { return ([], []) }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        var entries: [EffectEntry] = []
        var malformed: [Int] = []
        for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            if let entry = try? JSONCoding.decoder.decode(EffectEntry.self, from: Data(line)) {
                entries.append(entry)
            } else {
                malformed.append(index + 1)
            }
        }
        return (entries, malformed)
    }
}
