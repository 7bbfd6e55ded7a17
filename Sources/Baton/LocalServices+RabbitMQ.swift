import Foundation

extension LocalServices {
    /// The port of Erlang's port mapper daemon, shared by every Erlang node on the host.
    static let epmdPort = 4369

    /// `rabbitmq.conf` when the template folder has none (the repository's `Config/rabbitmq.conf` says the same).
    static let defaultRabbitMQConf = """
        # The RabbitMQ node that `baton services start` runs for the demo, the tests and the benchmarks.
        # Loopback only. `baton services start` replaces the listener line with its configured port.
        listeners.tcp.default = 127.0.0.1:5673
        # The user guest may log in over loopback (RabbitMQ's default), so loopback_users stays as it is.
        # consumer_timeout stays at the broker's default (30 minutes on 3.10); see DESIGN.md §3.
        log.console = false
        log.file.level = info

        """

    /// The files of the node, all under `<services folder>/rabbitmq`.
    struct RabbitMQPaths {
        let base: String
        var mnesia: String { base + "/mnesia" }
        var logs: String { base + "/log" }
        var home: String { base + "/home" }
        var pidFile: String { base + "/node.pid" }
        var configFile: String { base + "/rabbitmq.conf" }
        var enabledPlugins: String { base + "/enabled_plugins" }
        var envFile: String { base + "/rabbitmq-env.conf" }
        var launcherOutput: String { logs + "/launcher.out" }
        var controlOutput: String { logs + "/rabbitmqctl.out" }
        /// Where the Erlang VM writes `erl_crash.dump` when it halts (by default, its working directory).
        var crashDump: String { logs + "/erl_crash.dump" }
    }

    var rabbitMQPaths: RabbitMQPaths { RabbitMQPaths(base: folder(.rabbitmq)) }

    /// The environment of `rabbitmq-server` and `rabbitmqctl` for this node: every path inside the node's
    /// folder, `HOME` there too (it holds the Erlang cookie), nothing inherited from `/etc/rabbitmq`.
    func rabbitMQEnvironment() -> [String: String] {
        let paths = rabbitMQPaths
        var environment = ProcessInfo.processInfo.environment.filter {
            !$0.key.hasPrefix("RABBITMQ_") && !$0.key.hasPrefix("ERL_")
        }
        environment["HOME"] = paths.home
        environment["RABBITMQ_NODENAME"] = configuration.rabbitMQNodeName
        environment["RABBITMQ_NODE_IP_ADDRESS"] = "127.0.0.1"
        environment["RABBITMQ_NODE_PORT"] = String(configuration.amqpPort)
        environment["RABBITMQ_DIST_PORT"] = String(configuration.rabbitMQDistributionPort)
        environment["RABBITMQ_MNESIA_BASE"] = paths.mnesia
        environment["RABBITMQ_LOG_BASE"] = paths.logs
        environment["RABBITMQ_LOGS"] = logFile(of: .rabbitmq)
        environment["RABBITMQ_PID_FILE"] = paths.pidFile
        environment["RABBITMQ_CONFIG_FILE"] = paths.configFile
        environment["RABBITMQ_ADVANCED_CONFIG_FILE"] = paths.base + "/advanced.config"
        environment["RABBITMQ_ENABLED_PLUGINS_FILE"] = paths.enabledPlugins
        environment["RABBITMQ_CONF_ENV_FILE"] = paths.envFile
        environment["ERL_CRASH_DUMP"] = paths.crashDump
        // The distribution port listens on loopback only, like AMQP.
        environment["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = "-kernel inet_dist_use_interface {127,0,0,1}"
        return environment
    }

    /// `rabbitmq.conf`: the template with its `listeners.tcp.*` lines replaced by the configured port.
    func rabbitMQConf() -> String {
        let template = template("rabbitmq.conf", fallback: Self.defaultRabbitMQConf)
        var lines = template.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("listeners.tcp.") }
        while lines.last?.isEmpty == true { lines.removeLast() }
        lines.append("listeners.tcp.default = 127.0.0.1:\(configuration.amqpPort)")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Starts the node detached and waits until it answers AMQP.
    func startRabbitMQ() async throws -> ServicesState.Record {
        let paths = rabbitMQPaths
        do {
            for path in [paths.mnesia, paths.logs, paths.home] {
                try FileManager.default.createDirectory(
                    atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
        } catch {
            throw LocalServicesError(code: .io, service: .rabbitmq, message: "cannot create \(paths.base): \(error.localizedDescription)")
        }
        try write(rabbitMQConf(), to: paths.configFile)
        if !FileManager.default.fileExists(atPath: paths.enabledPlugins) { try write("[].\n", to: paths.enabledPlugins) }
        try write("", to: paths.envFile)
        try? FileManager.default.removeItem(atPath: paths.pidFile)
        try? FileManager.default.removeItem(atPath: logFile(of: .rabbitmq))
        try? FileManager.default.removeItem(atPath: paths.crashDump)

        let startedEpmd = try await startEpmdIfNeeded()
        logger.info("starting RabbitMQ node \(configuration.rabbitMQNodeName) on 127.0.0.1:\(configuration.amqpPort)")
        let home = paths.home
        do {
            let status = try await ChildProcess.run(
                configuration.rabbitMQBinDirectory + "/rabbitmq-server", ["-detached"], environment: rabbitMQEnvironment(),
                outputFile: paths.launcherOutput, timeout: configuration.startTimeout)
            guard status == 0 else {
                throw LocalServicesError(
                    code: .startFailed, service: .rabbitmq,
                    message:
                        "rabbitmq-server -detached exited with status \(status); see \(paths.launcherOutput) and \(logFile(of: .rabbitmq))"
                )
            }
            try await waitUntilReady(
                .rabbitmq, pid: nil, pidFile: paths.pidFile, launcherOutput: paths.launcherOutput,
                findProcess: { Self.findRabbitMQNode(home: home) })
        } catch var error as LocalServicesError {
            // A node this start launched that still runs (booting past the start timeout) is stopped: nothing records
            // it, so `baton services stop` would not find it, and it would hold the ports the next start needs.
            if let pid = ProcessInspector.readPid(file: paths.pidFile) ?? Self.findRabbitMQNode(home: home),
                ProcessInspector.isAlive(pid: pid, command: nil)
            {
                logger.warning("stopping the RabbitMQ node this start launched (pid \(pid)): \(error.message)")
                if (try? await terminate(.rabbitmq, pid: pid, alreadyAsked: false)) != nil {
                    error.message += " (the node it launched, pid \(pid), was stopped)"
                } else {
                    error.message += " (the node it launched, pid \(pid), could not be stopped: kill it before the next start)"
                }
            }
            throw error
        }
        guard let pid = ProcessInspector.readPid(file: paths.pidFile) ?? Self.findRabbitMQNode(home: home) else {
            throw LocalServicesError(
                code: .startFailed, service: .rabbitmq,
                message: "RabbitMQ answers on 127.0.0.1:\(configuration.amqpPort) but wrote no pid to \(paths.pidFile)")
        }
        return ServicesState.Record(
            pid: pid, port: configuration.amqpPort, node: configuration.rabbitMQNodeName, startedEpmd: startedEpmd,
            startedAt: Date())
    }

    /// The pid of the node whose home folder is `home` (nil when none runs).
    ///
    /// By its `-home` argument: `erl` passes `$HOME` (set to the node's own folder) on the emulator's command line,
    /// while the node name is not on it at all (RabbitMQ 3.10 starts distribution from its prelaunch code, so a
    /// lookup by node name never matched and a node booting longer than the grace was called dead: a CI run on
    /// 2026-11-23 failed that way).
    static func findRabbitMQNode(home: String) -> Int32? {
        ProcessInspector.findPid(command: Service.rabbitmq.processName, arguments: ["-home", home])
    }

    /// Starts `epmd` (loopback only) unless one runs; returns true when it started one.
    func startEpmdIfNeeded() async throws -> Bool {
        if await OffPool.run({ PortProbe.isOpen(port: Self.epmdPort) }) { return false }
        guard FileManager.default.isExecutableFile(atPath: configuration.epmdPath) else {
            return false  // the node starts its own epmd through erl
        }
        var environment = ProcessInfo.processInfo.environment
        environment["ERL_EPMD_ADDRESS"] = "127.0.0.1"
        let status = try await ChildProcess.run(
            configuration.epmdPath, ["-daemon"], environment: environment, outputFile: rabbitMQPaths.logs + "/epmd.out",
            timeout: .seconds(10))
        logger.debug("epmd -daemon exited with status \(status)")
        return status == 0
    }

    /// Stops the node: `rabbitmqctl stop`, then SIGTERM, then SIGKILL, each after the stop timeout. Then asks the
    /// `epmd` that Baton started to exit (it refuses while any other node is registered).
    func stopRabbitMQ(_ record: ServicesState.Record) async throws -> Bool {
        let paths = rabbitMQPaths
        logger.info("stopping RabbitMQ node \(record.node ?? configuration.rabbitMQNodeName) (pid \(record.pid))")
        let status = try await ChildProcess.run(
            configuration.rabbitMQBinDirectory + "/rabbitmqctl", ["-n", record.node ?? configuration.rabbitMQNodeName, "stop"],
            environment: rabbitMQEnvironment(), outputFile: paths.controlOutput, timeout: configuration.stopTimeout)
        if status != 0 {
            logger.info("rabbitmqctl stop exited with status \(status) (see \(paths.controlOutput)); sending SIGTERM")
        }
        let killed = try await terminate(.rabbitmq, pid: record.pid, alreadyAsked: status == 0)
        if record.startedEpmd == true, FileManager.default.isExecutableFile(atPath: configuration.epmdPath) {
            let epmd = try await ChildProcess.run(
                configuration.epmdPath, ["-kill"], outputFile: paths.logs + "/epmd.out", timeout: .seconds(10))
            logger.debug("epmd -kill exited with status \(epmd)")
        }
        return killed
    }
}
