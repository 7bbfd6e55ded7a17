import Foundation

extension LocalServices {
    /// `redis.conf` when the template folder has none (the repository's `Config/redis.conf` says the same).
    /// `baton services start` sets port, bind, dir, pidfile, logfile and daemonize on the command line.
    static let defaultRedisConf = """
        # The Redis that `baton services start` runs for the demo, the tests and the benchmarks.
        # `baton services start` passes --port, --bind 127.0.0.1, --dir, --pidfile, --logfile and
        # --daemonize yes on the command line; those win over this file.
        appendonly yes
        # everysec is Baton's default durability (DESIGN.md §4); `always` loses nothing on an OS crash.
        appendfsync everysec
        save ""
        protected-mode yes
        # Memory per task (`baton bench idle`, docs/benchmarks.md): a task hash leaves listpack encoding once a value (a
        # wait's descriptor, an input) passes hash-max-listpack-value (64 by default): a waiting task takes ~2.4 KB with 128,
        # ~3.8 KB without. A stream's newest node is preallocated at stream-node-max-bytes (4 KiB by default); Baton rewrites
        # a short history at its exact size when the task rests, so 512 matters only for long histories.
        # `baton bench stepchain` showed no difference in throughput with either.
        stream-node-max-bytes 512
        hash-max-listpack-value 128

        """

    /// The files of Redis, all under `<services folder>/redis`.
    struct RedisPaths {
        let base: String
        var configFile: String { base + "/redis.conf" }
        var pidFile: String { base + "/redis.pid" }
        var launcherOutput: String { base + "/launcher.out" }
    }

    var redisPaths: RedisPaths { RedisPaths(base: folder(.redis)) }

    /// The `redis-server` arguments: the config file, then the settings that must be Baton's.
    func redisArguments() -> [String] {
        let paths = redisPaths
        return [
            paths.configFile,
            "--port", String(configuration.redisPort),
            "--bind", "127.0.0.1",
            "--dir", paths.base,
            "--pidfile", paths.pidFile,
            "--logfile", logFile(of: .redis),
            "--daemonize", "yes",
        ]
    }

    /// Starts Redis daemonized with AOF on and waits until it answers `PING`.
    func startRedis() async throws -> ServicesState.Record {
        let paths = redisPaths
        try write(template("redis.conf", fallback: Self.defaultRedisConf), to: paths.configFile)
        try? FileManager.default.removeItem(atPath: paths.pidFile)
        logger.info("starting Redis on 127.0.0.1:\(configuration.redisPort)")
        let status = try await ChildProcess.run(
            configuration.redisServerPath, redisArguments(), outputFile: paths.launcherOutput, timeout: configuration.startTimeout)
        guard status == 0 else {
            let output =
                (try? String(contentsOfFile: paths.launcherOutput, encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            throw LocalServicesError(
                code: .startFailed, service: .redis,
                message: "redis-server exited with status \(status); see \(paths.launcherOutput) and \(logFile(of: .redis))"
                    + (output.isEmpty ? "" : "\n" + output))
        }
        try await waitUntilReady(.redis, pid: nil, pidFile: paths.pidFile, launcherOutput: paths.launcherOutput)
        guard
            let pid = ProcessInspector.readPid(file: paths.pidFile)
                ?? ProcessInspector.findPid(
                    command: Service.redis.processName, arguments: ["127.0.0.1:\(configuration.redisPort)"])
        else {
            throw LocalServicesError(
                code: .startFailed, service: .redis,
                message: "Redis answers on 127.0.0.1:\(configuration.redisPort) but wrote no pid to \(paths.pidFile)")
        }
        return ServicesState.Record(pid: pid, port: configuration.redisPort, node: nil, startedEpmd: nil, startedAt: Date())
    }

    /// Stops Redis with SIGTERM (a clean shutdown that flushes the AOF), then SIGKILL after the stop timeout.
    func stopRedis(_ record: ServicesState.Record) async throws -> Bool {
        logger.info("stopping Redis (pid \(record.pid))")
        return try await terminate(.redis, pid: record.pid, alreadyAsked: false)
    }
}
