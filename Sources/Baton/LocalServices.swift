import Foundation
import Logging

/// A local RabbitMQ node and a local Redis on loopback, without Docker or systemd.
///
/// This is what `baton services start|stop|status` runs, and what the tests, the demo and the benchmarks use.
/// Everything lives under one folder (``Configuration/directory``): the node's mnesia, logs, pid file,
/// configuration, enabled-plugins file and `HOME` (which holds its Erlang cookie), Redis's AOF, log and pid
/// file, and a `state.json` that records what Baton started, so ``stop()`` stops only that.
///
/// - ``start()`` is idempotent: a server that already answers on its port is left alone.
/// - RabbitMQ is started by calling `/usr/lib/rabbitmq/bin/rabbitmq-server -detached` directly (the Debian
///   wrapper in `/usr/sbin` would switch to the `rabbitmq` user), so it works as root.
/// - Waiting on child processes and probing ports happens off Swift's cooperative pool.
public struct LocalServices: Sendable {
    /// The servers ``LocalServices`` can run.
    public enum Service: String, Sendable, CaseIterable, Codable, CustomStringConvertible {
        /// The RabbitMQ node (AMQP 0-9-1).
        case rabbitmq
        /// Redis, with AOF on.
        case redis

        /// The product name, for messages.
        public var description: String {
            switch self {
            case .rabbitmq: "RabbitMQ"
            case .redis: "Redis"
            }
        }

        /// The Debian package that provides it.
        public var debianPackage: String {
            switch self {
            case .rabbitmq: "rabbitmq-server"
            case .redis: "redis-server"
            }
        }
    }

    /// Where the servers listen and keep their files.
    public struct Configuration: Sendable {
        /// The folder for every file of both servers. Default: `$BATON_SERVICES_DIR`, else `$HOME/.baton/services`.
        public var directory: String
        /// Which servers to manage. Default: both.
        public var services: [Service] = Service.allCases
        /// The Erlang node name of the RabbitMQ node. Default: `baton@localhost`.
        public var rabbitMQNodeName: String = "baton@localhost"
        /// The AMQP port (on 127.0.0.1). Default: ``Endpoints/localAMQPPort`` (5673).
        public var amqpPort: Int = Endpoints.localAMQPPort
        /// The Erlang distribution port of the node (on 127.0.0.1), used by `rabbitmqctl`. Default: 25673.
        public var rabbitMQDistributionPort: Int = 25673
        /// The Redis port (on 127.0.0.1). Default: ``Endpoints/localRedisPort`` (6390).
        public var redisPort: Int = Endpoints.localRedisPort
        /// How long ``LocalServices/start()`` waits for a server to answer. Default: 60 s.
        public var startTimeout: Duration = .seconds(60)
        /// How long ``LocalServices/stop()`` waits for a server to exit before it kills it. Default: 30 s.
        public var stopTimeout: Duration = .seconds(30)
        /// A folder holding `rabbitmq.conf` and `redis.conf` to use as templates (the repository's `Config/`).
        /// Default: `./Config` when it exists. A missing file is generated with the same defaults.
        public var templateDirectory: String?
        /// Where the RabbitMQ scripts are. Default: `/usr/lib/rabbitmq/bin` (Debian's `rabbitmq-server` package).
        public var rabbitMQBinDirectory: String = "/usr/lib/rabbitmq/bin"
        /// The `redis-server` executable. Default: `/usr/bin/redis-server` (Debian's `redis-server` package).
        public var redisServerPath: String = "/usr/bin/redis-server"
        /// The `epmd` executable (Erlang's port mapper, shared by all nodes on the host). Default: `/usr/bin/epmd`.
        public var epmdPath: String = "/usr/bin/epmd"

        /// The defaults above, reading `BATON_SERVICES_DIR` and `HOME` from `environment`.
        public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
            self.directory = Self.defaultDirectory(environment: environment)
            let config = FileManager.default.currentDirectoryPath + "/Config"
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: config, isDirectory: &isDirectory), isDirectory.boolValue {
                self.templateDirectory = config
            }
        }

        /// `$BATON_SERVICES_DIR`, else `$HOME/.baton/services`.
        public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
            if let dir = environment["BATON_SERVICES_DIR"], !dir.isEmpty { return dir }
            let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            return home + "/.baton/services"
        }

        /// The URL of the local RabbitMQ node (user `guest`, which RabbitMQ allows on loopback).
        public var amqpURL: String { "amqp://guest:guest@127.0.0.1:\(amqpPort)/" }
        /// The URL of the local Redis (database 0).
        public var redisURL: String { "redis://127.0.0.1:\(redisPort)/0" }

        /// The URL of `service`.
        public func url(of service: Service) -> String {
            switch service {
            case .rabbitmq: amqpURL
            case .redis: redisURL
            }
        }

        /// The port of `service`.
        public func port(of service: Service) -> Int {
            switch service {
            case .rabbitmq: amqpPort
            case .redis: redisPort
            }
        }
    }

    /// What ``LocalServices/status()`` reports about one server.
    public struct ServiceStatus: Sendable, Equatable, Encodable {
        /// Whether a server of this kind answers on its port.
        public var running: Bool
        /// Its URL.
        public var url: String
        /// Its port on 127.0.0.1.
        public var port: Int
        /// Its process id, when Baton started it and it still runs.
        public var pid: Int32?
        /// Whether Baton started it (and so ``LocalServices/stop()`` would stop it).
        public var startedByBaton: Bool
        /// Its log file, when Baton started it.
        public var log: String?

        enum CodingKeys: String, CodingKey {
            case running, url, port, pid, log
            case startedByBaton = "started_by_baton"
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(running, forKey: .running)
            try container.encode(url, forKey: .url)
            try container.encode(port, forKey: .port)
            try container.encode(pid, forKey: .pid)  // `null` when unknown
            try container.encode(startedByBaton, forKey: .startedByBaton)
            try container.encode(log, forKey: .log)
        }
    }

    /// What runs where: the answer of ``LocalServices/status()`` and `baton services status --json`.
    public struct Status: Sendable, Equatable, Encodable {
        /// The RabbitMQ node, when managed.
        public var rabbitmq: ServiceStatus?
        /// Redis, when managed.
        public var redis: ServiceStatus?
        /// The services folder.
        public var directory: String

        enum CodingKeys: String, CodingKey {
            case rabbitmq, redis
            case directory = "dir"
        }

        /// The status of `service`, when managed.
        public subscript(service: Service) -> ServiceStatus? {
            switch service {
            case .rabbitmq: rabbitmq
            case .redis: redis
            }
        }
    }

    /// What ``LocalServices/start()`` did for one server.
    public struct StartResult: Sendable, Equatable {
        /// The server.
        public var service: Service
        /// True when it was already answering and was left alone.
        public var alreadyRunning: Bool
        /// Its process id, when Baton started it (now or earlier).
        public var pid: Int32?
        /// Whether Baton started it (now or earlier).
        public var startedByBaton: Bool
        /// How long this call took for it.
        public var duration: Duration
        /// Its URL.
        public var url: String
        /// Its log file, when Baton started it.
        public var log: String?
    }

    /// What ``LocalServices/stop()`` did for one server.
    public struct StopResult: Sendable, Equatable {
        /// The server.
        public var service: Service
        /// True when Baton had started it and it was running, so it was stopped now.
        public var stopped: Bool
        /// The process id it had.
        public var pid: Int32?
        /// True when it had to be killed (SIGKILL) because it did not exit within the stop timeout.
        public var killed: Bool
        /// True when a server still answers on the port (one that Baton did not start, so it was left alone).
        public var stillAnswering: Bool
        /// How long this call took for it.
        public var duration: Duration
    }

    /// The configuration in use.
    public let configuration: Configuration
    let logger: Logger

    /// Manages the servers of `configuration`; starts nothing until ``start()``.
    public init(configuration: Configuration = Configuration(), logger: Logger = Logger(label: "baton.services")) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The folder of `service` inside ``Configuration/directory``.
    func folder(_ service: Service) -> String { configuration.directory + "/" + service.rawValue }

    /// The log file of `service`.
    public func logFile(of service: Service) -> String {
        switch service {
        case .rabbitmq: folder(.rabbitmq) + "/log/rabbitmq.log"
        case .redis: folder(.redis) + "/redis.log"
        }
    }

    // MARK: - status

    /// What runs where. Never throws: an unreadable state file counts as "Baton started nothing".
    public func status() async -> Status {
        let state = (try? loadState()) ?? ServicesState()
        var result = Status(directory: configuration.directory)
        await withTaskGroup(of: (Service, ServiceStatus).self) { group in
            for service in configuration.services {
                group.addTask { (service, await self.status(of: service, state: state)) }
            }
            for await (service, status) in group {
                switch service {
                case .rabbitmq: result.rabbitmq = status
                case .redis: result.redis = status
                }
            }
        }
        return result
    }

    func status(of service: Service, state: ServicesState) async -> ServiceStatus {
        let probe = await probe(service)
        let record = ownRecord(service, state: state)
        return ServiceStatus(
            running: probe.isServer, url: configuration.url(of: service), port: configuration.port(of: service),
            pid: record?.pid, startedByBaton: record != nil, log: record != nil ? logFile(of: service) : nil)
    }

    /// The live server of `service` that Baton started: the one in the state file, else one whose pid file in
    /// this folder names a live process of the right program (a server started from this folder whose state
    /// was not recorded, e.g. because `start` was interrupted).
    func ownRecord(_ service: Service, state: ServicesState) -> ServicesState.Record? {
        if let record = state[service].flatMap({ liveRecord($0, of: service) }) { return record }
        let pidFile =
            switch service {
            case .rabbitmq: rabbitMQPaths.pidFile
            case .redis: redisPaths.pidFile
            }
        guard let pid = ProcessInspector.readPid(file: pidFile), ProcessInspector.isAlive(pid: pid, command: service.processName)
        else { return nil }
        return ServicesState.Record(
            pid: pid, port: configuration.port(of: service),
            node: service == .rabbitmq ? configuration.rabbitMQNodeName : nil, startedEpmd: nil, startedAt: Date())
    }

    /// `record` when its process still runs and is the expected program (a reused pid is not ours).
    func liveRecord(_ record: ServicesState.Record, of service: Service) -> ServicesState.Record? {
        ProcessInspector.isAlive(pid: record.pid, command: service.processName) ? record : nil
    }

    func probe(_ service: Service) async -> PortProbe.Result {
        let port = configuration.port(of: service)
        return await OffPool.run {
            switch service {
            case .rabbitmq: PortProbe.amqp(port: port)
            case .redis: PortProbe.redis(port: port)
            }
        }
    }

    // MARK: - start

    /// Starts the servers that do not answer yet, in parallel, and waits until they answer.
    ///
    /// A server that already answers on its port is left alone (reported with `alreadyRunning`).
    /// - Throws: ``LocalServicesError`` with code `notInstalled` when a server program is missing (the message
    ///   names the Debian package), `portInUse` when another program holds a port, `timedOut` or `startFailed`
    ///   with the log file to read.
    public func start() async throws -> [StartResult] {
        try prepareDirectory()
        let lock = try await ServicesLock.acquire(directory: configuration.directory)
        defer { lock.release() }

        var state = try loadState()
        let needsStart = try await servicesToStart(state: &state)
        try checkInstalled(needsStart.filter { $0.value }.map(\.key))

        let results = try await withThrowingTaskGroup(of: (StartResult, ServicesState.Record?).self) { group in
            for service in configuration.services {
                let start = needsStart[service] ?? false
                let existing = state[service]
                group.addTask {
                    let clock = ContinuousClock()
                    let begin = clock.now
                    if !start {
                        let result = StartResult(
                            service: service, alreadyRunning: true, pid: existing?.pid, startedByBaton: existing != nil,
                            duration: clock.now - begin, url: configuration.url(of: service),
                            log: existing != nil ? logFile(of: service) : nil)
                        return (result, existing)
                    }
                    let record =
                        switch service {
                        case .rabbitmq: try await startRabbitMQ()
                        case .redis: try await startRedis()
                        }
                    let result = StartResult(
                        service: service, alreadyRunning: false, pid: record.pid, startedByBaton: true,
                        duration: clock.now - begin, url: configuration.url(of: service), log: logFile(of: service))
                    return (result, record)
                }
            }
            var results: [StartResult] = []
            for try await (result, record) in group {
                results.append(result)
                if !result.alreadyRunning { state[result.service] = record }
            }
            return results
        }
        try saveState(state)
        return configuration.services.compactMap { service in results.first { $0.service == service } }
    }

    /// Decides per service whether to start it; clears records of processes that no longer run; waits for a
    /// server that Baton started earlier and that is still booting.
    func servicesToStart(state: inout ServicesState) async throws -> [Service: Bool] {
        var decisions: [Service: Bool] = [:]
        for service in configuration.services {
            let record = ownRecord(service, state: state)
            state[service] = record
            switch await probe(service) {
            case .ready, .busy:
                decisions[service] = false
            case .foreign:
                throw LocalServicesError(
                    code: .portInUse, service: service,
                    message:
                        "port \(configuration.port(of: service)) on 127.0.0.1 is in use by a program that does not answer as \(service); "
                        + "stop it, or run Baton's \(service) on another port")
            case .closed:
                if record != nil {
                    // Ours, still booting (or hung): wait for it instead of starting a second one.
                    try await waitUntilReady(service, pid: record?.pid)
                    decisions[service] = false
                } else {
                    decisions[service] = true
                }
            }
        }
        return decisions
    }

    func checkInstalled(_ services: [Service]) throws {
        let missing = services.filter { service in
            let path =
                switch service {
                case .rabbitmq: configuration.rabbitMQBinDirectory + "/rabbitmq-server"
                case .redis: configuration.redisServerPath
                }
            return !FileManager.default.isExecutableFile(atPath: path)
        }
        guard !missing.isEmpty else { return }
        let names = missing.map(\.description).joined(separator: " and ")
        let packages = missing.map(\.debianPackage).joined(separator: " ")
        throw LocalServicesError(
            code: .notInstalled, service: missing.count == 1 ? missing[0] : nil,
            message: "\(names) \(missing.count == 1 ? "is" : "are") not installed; install with: apt-get install \(packages)")
    }

    /// Polls `service` until it answers ready, the deadline passes, or its process (when known) exits.
    ///
    /// `findProcess` finds a server that is up before it writes its pid file (a RabbitMQ node writes it late in its
    /// boot). When neither has shown a process `orphanGrace` after the launcher returned, the server died early
    /// (a RabbitMQ node whose distribution port was taken halts before it logs a line): that fails at once instead of
    /// at the start timeout.
    func waitUntilReady(
        _ service: Service, pid: Int32?, pidFile: String? = nil, launcherOutput: String? = nil,
        findProcess: (@Sendable () -> Int32?)? = nil, orphanGrace: Duration = .seconds(15)
    ) async throws {
        let clock = ContinuousClock()
        let started = clock.now
        let deadline = started + configuration.startTimeout
        var knownPid = pid
        // Whether `knownPid` is a search's find rather than the launcher's or the pid file's: only a hint, since the
        // search can meet a process of the launch that exits by design (`rabbitmq-server -detached` starts a first
        // emulator with the node's arguments that forks the node and exits; a full test run caught it so on
        // 2026-11-24 and called a booting node dead). Such a pid that exits is forgotten and the search goes on.
        var searched = false
        var lastSearch: ContinuousClock.Instant? = nil
        while true {
            if case .ready = await probe(service) { return }
            if knownPid == nil, let pidFile { knownPid = ProcessInspector.readPid(file: pidFile) }
            if knownPid == nil, let findProcess, lastSearch.map({ clock.now - $0 >= .seconds(1) }) ?? true {
                lastSearch = clock.now
                knownPid = await OffPool.run { findProcess() }
                searched = knownPid != nil
                if knownPid == nil, clock.now - started >= orphanGrace {
                    throw LocalServicesError(
                        code: .startFailed, service: service,
                        message: "\(service) is not running \(orphanGrace.secondsText) s after its launcher returned (it exited while "
                            + "starting)\(crashReason(service)); see \(startLogs(service, launcherOutput: launcherOutput))"
                            + logTail(service) + launcherTail(launcherOutput))
                }
            }
            if let found = knownPid, searched, !ProcessInspector.isAlive(pid: found, command: nil) {
                knownPid = nil
                searched = false
            }
            if let knownPid, !ProcessInspector.isAlive(pid: knownPid, command: nil) {
                throw LocalServicesError(
                    code: .startFailed, service: service,
                    message: "\(service) (pid \(knownPid)) exited while starting\(crashReason(service)); see "
                        + startLogs(service, launcherOutput: launcherOutput) + logTail(service) + launcherTail(launcherOutput))
            }
            if clock.now >= deadline {
                throw LocalServicesError(
                    code: .timedOut, service: service,
                    message: "\(service) did not answer on 127.0.0.1:\(configuration.port(of: service)) within "
                        + "\(configuration.startTimeout.secondsText) s; see \(startLogs(service, launcherOutput: launcherOutput))"
                        + logTail(service) + launcherTail(launcherOutput))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The files that tell why `service` did not start: its log, the launcher's output, and a RabbitMQ node's Erlang
    /// crash dump when it wrote one.
    func startLogs(_ service: Service, launcherOutput: String?) -> String {
        var files = [logFile(of: service)] + (launcherOutput.map { [$0] } ?? [])
        if service == .rabbitmq, FileManager.default.fileExists(atPath: rabbitMQPaths.crashDump) { files.append(rabbitMQPaths.crashDump) }
        return files.joined(separator: " and ")
    }

    /// Why a RabbitMQ node halted, from the `Slogan:` line of its crash dump (": …", or "" without one). A taken
    /// distribution port, the usual cause, is said in words.
    func crashReason(_ service: Service) -> String {
        guard service == .rabbitmq, let handle = FileHandle(forReadingAtPath: rabbitMQPaths.crashDump) else { return "" }
        defer { try? handle.close() }
        let head = String(decoding: (try? handle.read(upToCount: 8192)) ?? Data(), as: UTF8.self)
        guard let line = head.split(separator: "\n").first(where: { $0.hasPrefix("Slogan: ") }) else { return "" }
        let slogan = line.dropFirst("Slogan: ".count).prefix(400)
        if slogan.contains("dist_port_already_used") {
            return ": its Erlang distribution port \(configuration.rabbitMQDistributionPort) on 127.0.0.1 is in use by another program "
                + "(\(slogan))"
        }
        return ": \(slogan)"
    }

    /// The last lines of a launcher's output, indented, for an error message ("" when it printed nothing).
    func launcherTail(_ path: String?, lines: Int = 8) -> String {
        guard let path, let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "" }
        let tail = text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines)
        guard !tail.isEmpty else { return "" }
        return "\nlast lines of \(path):\n" + tail.map { "  " + $0 }.joined(separator: "\n")
    }

    /// The last lines of the log of `service`, indented, for an error message ("" when there is none).
    func logTail(_ service: Service, lines: Int = 8) -> String {
        guard let text = try? String(contentsOfFile: logFile(of: service), encoding: .utf8) else { return "" }
        let tail = text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines)
        guard !tail.isEmpty else { return "" }
        return "\nlast lines of the log:\n" + tail.map { "  " + $0 }.joined(separator: "\n")
    }

    // MARK: - stop

    /// Stops the servers that Baton started (by their recorded pids) and waits until their ports are closed.
    ///
    /// A server that Baton did not start is left alone. A second call is a no-op.
    public func stop() async throws -> [StopResult] {
        guard FileManager.default.fileExists(atPath: configuration.directory) else {
            return configuration.services.map {
                StopResult(service: $0, stopped: false, pid: nil, killed: false, stillAnswering: false, duration: .zero)
            }
        }
        let lock = try await ServicesLock.acquire(directory: configuration.directory)
        defer { lock.release() }
        var state = try loadState()

        let results = try await withThrowingTaskGroup(of: StopResult.self) { group in
            for service in configuration.services {
                let record = ownRecord(service, state: state)
                group.addTask {
                    let clock = ContinuousClock()
                    let begin = clock.now
                    var killed = false
                    if let record {
                        killed =
                            switch service {
                            case .rabbitmq: try await stopRabbitMQ(record)
                            case .redis: try await stopRedis(record)
                            }
                    }
                    let stillAnswering = await probe(service).isServer
                    return StopResult(
                        service: service, stopped: record != nil, pid: record?.pid, killed: killed,
                        stillAnswering: stillAnswering, duration: clock.now - begin)
                }
            }
            var results: [StopResult] = []
            for try await result in group { results.append(result) }
            return results
        }
        for service in configuration.services { state[service] = nil }
        try saveState(state)
        return configuration.services.compactMap { service in results.first { $0.service == service } }
    }

    /// Sends SIGTERM (unless `alreadyAsked`), waits up to the stop timeout for `pid` to exit and `service`'s port
    /// to close, then SIGKILLs it. Returns true when it had to kill.
    func terminate(_ service: Service, pid: Int32, alreadyAsked: Bool) async throws -> Bool {
        if !alreadyAsked { kill(pid, SIGTERM) }
        if try await waitForExit(service, pid: pid, timeout: configuration.stopTimeout) { return false }
        logger.warning("\(service) (pid \(pid)) did not exit within \(configuration.stopTimeout.secondsText) s; killing it")
        kill(pid, SIGKILL)
        if try await waitForExit(service, pid: pid, timeout: .seconds(10)) { return true }
        throw LocalServicesError(
            code: .stopFailed, service: service, message: "\(service) (pid \(pid)) is still running after SIGKILL")
    }

    /// True once `pid` has exited and nothing answers on the port of `service`; false at the timeout.
    func waitForExit(_ service: Service, pid: Int32, timeout: Duration) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if !ProcessInspector.isAlive(pid: pid, command: nil) {
                if case .closed = await probe(service) { return true }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    // MARK: - files

    func prepareDirectory() throws {
        do {
            for path in [configuration.directory, folder(.rabbitmq), folder(.redis)] {
                try FileManager.default.createDirectory(
                    atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
        } catch {
            throw LocalServicesError(
                code: .io, service: nil,
                message:
                    "cannot create \(configuration.directory): \(error.localizedDescription); set BATON_SERVICES_DIR to a writable folder")
        }
    }

    /// The content of template `name` from ``Configuration/templateDirectory``, else `fallback`.
    func template(_ name: String, fallback: String) -> String {
        guard let directory = configuration.templateDirectory,
            let text = try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)
        else { return fallback }
        return text
    }

    func write(_ text: String, to path: String) throws {
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw LocalServicesError(code: .io, service: nil, message: "cannot write \(path): \(error.localizedDescription)")
        }
    }
}

extension LocalServices.Service {
    /// The process name (`/proc/<pid>/comm`) of the server, to tell its pid from a reused one.
    var processName: String {
        switch self {
        case .rabbitmq: "beam.smp"
        case .redis: "redis-server"
        }
    }
}

extension Duration {
    /// Whole and fractional seconds, for messages.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// "60" or "1.5": seconds for messages.
    var secondsText: String {
        let value = seconds
        return value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }
}
