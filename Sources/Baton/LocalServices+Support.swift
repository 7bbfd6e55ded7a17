import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `state.json` in the services folder records: the servers that Baton started.
struct ServicesState: Codable, Equatable, Sendable {
    struct Record: Codable, Equatable, Sendable {
        var pid: Int32
        var port: Int
        var node: String?
        /// True when Baton also started `epmd` for this node (then `stop` asks it to exit once no node uses it).
        var startedEpmd: Bool?
        var startedAt: Date

        enum CodingKeys: String, CodingKey {
            case pid, port, node
            case startedEpmd = "started_epmd"
            case startedAt = "started_at"
        }
    }

    var rabbitmq: Record?
    var redis: Record?

    subscript(service: LocalServices.Service) -> Record? {
        get {
            switch service {
            case .rabbitmq: rabbitmq
            case .redis: redis
            }
        }
        set {
            switch service {
            case .rabbitmq: rabbitmq = newValue
            case .redis: redis = newValue
            }
        }
    }
}

extension LocalServices {
    var stateFile: String { configuration.directory + "/state.json" }

    /// The recorded state; empty when there is no state file. An unreadable file is logged and treated as empty.
    func loadState() throws -> ServicesState {
        guard let data = FileManager.default.contents(atPath: stateFile) else { return ServicesState() }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(ServicesState.self, from: data)
        } catch {
            logger.warning("ignoring unreadable \(stateFile): \(error)")
            return ServicesState()
        }
    }

    func saveState(_ state: ServicesState) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            try encoder.encode(state).write(to: URL(fileURLWithPath: stateFile), options: .atomic)
        } catch {
            throw LocalServicesError(code: .io, service: nil, message: "cannot write \(stateFile): \(error.localizedDescription)")
        }
    }
}

/// Runs blocking work on a thread of its own, never on Swift's cooperative pool.
enum OffPool {
    static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: body()) }
            thread.start()
        }
    }
}

/// An exclusive `flock` on `<services folder>/.lock`, so two `baton services` commands do not race.
struct ServicesLock: Sendable {
    let fd: Int32

    static func acquire(directory: String) async throws -> ServicesLock {
        let path = directory + "/.lock"
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw LocalServicesError(
                code: .io, service: nil, message: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        // flock blocks while another `baton services` command holds the lock: wait off the pool.
        let result = await OffPool.run { flock(fd, LOCK_EX) }
        guard result == 0 else {
            close(fd)
            throw LocalServicesError(code: .io, service: nil, message: "cannot lock \(path): \(String(cString: strerror(errno)))")
        }
        return ServicesLock(fd: fd)
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

/// Reads `/proc` to tell whether a recorded pid still runs the expected program.
enum ProcessInspector {
    /// True when `pid` runs (not a zombie) and, when `command` is given, its `/proc/<pid>/comm` is `command`.
    static func isAlive(pid: Int32, command: String?) -> Bool {
        guard pid > 0 else { return false }
        guard FileManager.default.fileExists(atPath: "/proc/self/stat") else {
            return kill(pid, 0) == 0  // no /proc (macOS): best effort
        }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        if state == "Z" || state == "X" { return false }
        guard let command else { return true }
        let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return comm == command
    }

    /// The pid in a pid file, if it holds one.
    static func readPid(file: String) -> Int32? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The first process named `command` whose command line holds `arguments` in a row (a fallback when a pid file is
    /// missing).
    ///
    /// Words are compared, not `argv` entries: a Redis server rewrites its title to one string
    /// ("/usr/bin/redis-server 127.0.0.1:6390"), so its port is never an entry of its own.
    static func findPid(command: String, arguments: [String]) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        let wanted = " " + arguments.joined(separator: " ") + " "
        for entry in entries {
            guard let pid = Int32(entry), isAlive(pid: pid, command: command),
                let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
            else { continue }
            let line = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
            if (" " + line + " ").contains(wanted) { return pid }
        }
        return nil
    }
}

/// Runs an external program and awaits its exit without blocking a thread of the cooperative pool: the exit
/// is collected by `waitpid` on a thread of its own.
///
/// Why not Foundation's `Process`: on Linux its exit notification depends on SIGCHLD reaching a dispatch
/// signal source, and in this process SIGCHLD was discarded (measured: the launcher exited, its
/// `terminationHandler` never ran, the zombie stayed). Its children also inherit the spawning thread's signal
/// mask, and a server started with SIGTERM blocked cannot be stopped by it. `posix_spawn` with an explicit
/// empty signal mask and default handlers, plus `waitpid`, has neither problem.
public enum ChildProcess {
    /// Runs `executable` with stdin from `/dev/null` and stdout and stderr into `outputFile` (never the caller's
    /// stdout: a daemon that inherited it would keep `$(baton services start)` waiting forever), with no signal
    /// blocked or ignored (the servers daemonize themselves).
    ///
    /// - Returns: the exit status (128 + signal number when it was killed, e.g. by SIGTERM at `timeout`).
    static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, outputFile: String,
        timeout: Duration
    ) async throws -> Int32 {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let pid = try spawn(
            executable, arguments, environment: environment.map { "\($0.key)=\($0.value)" }, outputFile: outputFile)
        let exited = Mutex(false)
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout.seconds) {
            // The pid cannot have been reused while `exited` is false: only `waitpid` below reaps it.
            exited.withLock { if !$0 { kill(pid, SIGTERM) } }
        }
        return await OffPool.run {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            exited.withLock { $0 = true }
            let signal = status & 0x7f
            return signal == 0 ? (status >> 8) & 0xff : 128 + signal
        }
    }

    /// Starts `executable` with stdin from `/dev/null`, stdout into `outputFile` and stderr into `errorFile`
    /// (default: `outputFile`), with no signal blocked or ignored; returns its pid (reap it with `waitpid`).
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String], outputFile: String, errorFile: String? = nil
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if let errorFile, errorFile != outputFile {
            posix_spawn_file_actions_addopen(&actions, 2, errorFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var nothing = sigset_t()
        sigemptyset(&nothing)
        posix_spawnattr_setsigmask(&attributes, &nothing)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw LocalServicesError(
                code: .startFailed, service: nil,
                message: "cannot run \(executable): \(String(cString: strerror(result))) (writing to \(outputFile))")
        }
        return pid
    }
}

/// Blocking, short (at most ~2 s) probes of a loopback port; call them through ``OffPool``.
enum PortProbe {
    enum Result: Sendable, Equatable {
        /// Nothing listens.
        case closed
        /// The expected server answers and is ready.
        case ready
        /// The expected server answers but is not ready (Redis loading its AOF).
        case busy
        /// Something listens that does not answer like the expected server.
        case foreign

        /// True when the expected server answers (ready or not).
        var isServer: Bool { self == .ready || self == .busy }
    }

    static let receiveTimeoutSeconds = 2

    /// Sends the AMQP 0-9-1 protocol header; a RabbitMQ answers with a method frame (connection.start).
    static func amqp(port: Int) -> Result {
        exchange(port: port, send: Array("AMQP".utf8) + [0, 0, 9, 1]) { bytes in
            bytes.first == 1 ? .ready : .foreign
        }
    }

    /// Sends `PING`; Redis answers `+PONG`, `-LOADING …` while it loads its data, or `-NOAUTH …` with a password.
    static func redis(port: Int) -> Result {
        exchange(port: port, send: Array("PING\r\n".utf8)) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            if text.hasPrefix("+PONG") { return .ready }
            if text.hasPrefix("-LOADING") { return .busy }
            if text.hasPrefix("-") { return .ready }
            return .foreign
        }
    }

    /// True when something accepts a TCP connection on 127.0.0.1:`port`.
    static func isOpen(port: Int) -> Bool {
        let fd = connectLoopback(port: port)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }

    static func exchange(port: Int, send bytes: [UInt8], classify: ([UInt8]) -> Result) -> Result {
        let fd = connectLoopback(port: port)
        guard fd >= 0 else { return .closed }
        defer { close(fd) }
        var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let sent = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else { return .foreign }
        var buffer = [UInt8](repeating: 0, count: 64)
        let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard received > 0 else { return .foreign }
        return classify(Array(buffer[0..<received]))
    }

    /// A connected TCP socket to 127.0.0.1:`port`, or -1.
    static func connectLoopback(port: Int) -> Int32 {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return -1 }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            return -1
        }
        return fd
    }
}
