import CHiredis
import Foundation
import Logging

/// A connection to one Redis server, with its own OS thread for the blocking hiredis calls.
///
/// Calls are async and may come from any number of tasks at once. They are queued to the connection's
/// thread, which sends every queued command in one pipeline and reads the replies in order: concurrent
/// callers share round trips (and Redis's group commit of the append-only file) without doing anything.
/// No call ever blocks a thread of Swift's cooperative pool.
///
/// When the connection breaks, the commands in flight fail with ``RedisError/Code/connectionLost`` (they
/// may or may not have run) and the next call reconnects, with backoff after failed attempts; a connection
/// that the server closed while idle (`CLIENT KILL`, `timeout`) is reopened before the next command is
/// written. Every (re)connect runs `AUTH` and `SELECT` from the URL.
///
/// ```swift
/// let configuration = try RedisConfiguration(url: "redis://127.0.0.1:6379/0")
/// let greeting = try await RedisConnection.withConnection(configuration: configuration, logger: logger) { redis in
///     try await redis.send("SET", "greeting", "hello")
///     return try await redis.send("GET", "greeting").string
/// }
/// ```
///
/// A connection is also a `TaskExecutor`: `withTaskExecutorPreference(connection) { … }` runs a task on the
/// connection's own thread between its round trips, so a loop of sequential calls pays no hand-off between
/// threads (the single-threaded hop loop of research/c-interop.md §1). Keep such code short and
/// non-blocking: while it runs, the connection does no I/O.
public final class RedisConnection: TaskExecutor, Sendable {
    /// The configuration this connection was opened with.
    public let configuration: RedisConfiguration
    private let queue: RequestQueue
    private let logger: Logger

    private init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.queue = RequestQueue(maximumQueuedCommands: configuration.maximumQueuedCommands)
    }

    deinit {
        // The thread holds only the queue; closing it lets the thread free the context and exit.
        for request in queue.close() {
            request.continuation?.resume(throwing: Self.closedError(configuration.url))
        }
    }

    /// Connects to the server (starting the connection's thread) and returns once `AUTH`, `SELECT` and a
    /// `PING` have succeeded; throws a ``RedisError`` naming the redacted URL otherwise.
    public static func connect(configuration: RedisConfiguration, logger: Logger) async throws -> RedisConnection {
        ignoreSIGPIPE
        let connection = RedisConnection(configuration: configuration, logger: logger)
        connection.startThread()
        do {
            _ = try await connection.submit([])
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Connects, runs `body` with the connection, and closes the connection when `body` returns or throws.
    public static func withConnection<Value>(
        configuration: RedisConfiguration,
        logger: Logger,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (RedisConnection) async throws -> Value
    ) async throws -> Value {
        let connection = try await connect(configuration: configuration, logger: logger)
        do {
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Sends one command and returns its reply.
    ///
    /// Throws a ``RedisError``: code ``RedisError/Code/server`` with the server's words when the reply is
    /// an error, ``RedisError/Code/connectionLost`` or ``RedisError/Code/timeout`` when the connection broke
    /// while the command was in flight, ``RedisError/Code/connectionFailed`` when it could not reconnect,
    /// ``RedisError/Code/closed`` after ``close()``. A task cancelled while its command is still queued
    /// gets `CancellationError`; once written, a command runs to completion.
    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RedisReply {
        let replies = try await submit([command])
        guard let reply = replies.first else {
            throw RedisError(code: .protocol, command: command.name, message: "Redis sent no reply to \(command.name)")
        }
        if let message = reply.errorMessage {
            throw Self.serverError(message, command: command, url: configuration.url)
        }
        return reply
    }

    /// Sends one command given by its name and arguments, e.g. `send("HGET", key, "field")`.
    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgumentConvertible...) async throws -> RedisReply {
        try await send(RedisCommand(name, arguments: arguments))
    }

    /// Sends commands in one round trip and returns their replies in order.
    ///
    /// A command the server rejects gets a ``RedisReply/error(_:)`` reply in its place (the others still
    /// run); an I/O failure throws a ``RedisError`` for the whole pipeline, some of whose commands may or
    /// may not have run. Commands from other callers may run between these (use `MULTI`/`EXEC` or a
    /// script for atomicity).
    public func pipeline(_ commands: [RedisCommand]) async throws -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        return try await submit(commands)
    }

    /// Runs a Lua script with `EVALSHA`, loading it first when the server does not know it.
    ///
    /// Throws like ``send(_:)``; an error raised by the script is a ``RedisError/Code/server`` error.
    @discardableResult
    public func evalSHA(
        _ script: RedisScript,
        keys: [any RedisArgumentConvertible] = [],
        args: [any RedisArgumentConvertible] = []
    ) async throws -> RedisReply {
        try await send(.evalSHA(script, keys: keys, args: args))
    }

    /// Queues commands without waiting for their replies: they run in order with every other request of
    /// this connection (so a later awaited command runs after them), and their replies, errors included,
    /// are dropped. For writes whose outcome a later awaited call checks anyway.
    public func sendDetached(_ commands: [RedisCommand]) {
        guard !commands.isEmpty else { return }
        let request = RequestQueue.Request(id: queue.makeID(), commands: commands, continuation: nil)
        _ = queue.enqueue(request) { _ in RedisError(code: .closed, message: "detached") }
    }

    /// Closes the connection: fails queued commands with ``RedisError/Code/closed``, lets the commands
    /// already written finish, stops the thread and frees the hiredis context. Safe to call more than once.
    public func close() async {
        for request in queue.close() {
            request.continuation?.resume(throwing: Self.closedError(configuration.url))
        }
        await queue.waitForExit()
    }

    // MARK: - Internals

    private func submit(_ commands: [RedisCommand]) async throws -> [RedisReply] {
        if commands.contains(where: { $0.count == 0 }) {
            throw RedisError(code: .protocol, message: "a RedisCommand has no arguments: give at least the command name")
        }
        let id = queue.makeID()
        let queue = self.queue
        let url = configuration.url
        let limit = configuration.maximumQueuedCommands
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[RedisReply], any Error>) in
                let request = RequestQueue.Request(id: id, commands: commands, continuation: continuation)
                let rejection = queue.enqueue(request) { closed in
                    closed
                        ? Self.closedError(url)
                        : RedisError(
                            code: .overloaded,
                            command: commands.first?.name,
                            message:
                                "more than \(limit) commands are queued for Redis at \(url.redacted): the server is slow or unreachable. "
                                + "Wait and retry, or raise maximumQueuedCommands"
                        )
                }
                if let rejection {
                    continuation.resume(throwing: rejection)
                }
            }
        } onCancel: {
            queue.cancel(id)
        }
    }

    private func startThread() {
        let queue = self.queue
        let configuration = self.configuration
        let logger = self.logger
        let executor = UnownedTaskExecutor(ordinary: self)
        let thread = Thread {
            Self.runLoop(queue: queue, configuration: configuration, logger: logger, executor: executor)
        }
        thread.name = "RedisConnection \(configuration.url.host):\(configuration.url.port)"
        thread.start()
    }

    /// The connection thread: the hiredis context is created, used and freed here and nowhere else.
    private static func runLoop(queue: RequestQueue, configuration: RedisConfiguration, logger: Logger, executor: UnownedTaskExecutor) {
        let link = HiredisLink(configuration: configuration, logger: logger)
        while let (jobs, batch) = queue.takeAll() {
            for job in jobs { job.runSynchronously(on: executor) }
            guard !batch.isEmpty else { continue }
            let results = link.run(batch, queue: queue)
            for (request, result) in zip(batch, results) {
                request.continuation?.resume(with: result.mapError { $0 as any Error })
            }
        }
        link.disconnect()
        logger.debug("Redis connection closed", metadata: [LogKey.url: "\(configuration.url.redacted)"])
        for job in queue.markExited() { globalConcurrentExecutor.enqueue(job) }
    }

    /// Runs a task job on the connection's thread (see ``TaskExecutor``); after ``close()`` jobs go to the
    /// global concurrent executor.
    public func enqueue(_ job: UnownedJob) {
        if !queue.enqueueJob(job) { globalConcurrentExecutor.enqueue(job) }
    }

    static func closedError(_ url: RedisURL) -> RedisError {
        RedisError(code: .closed, message: "the connection to Redis at \(url.redacted) is closed: open a new one")
    }

    static func serverError(_ message: String, command: RedisCommand, url: RedisURL) -> RedisError {
        let noScript = message.hasPrefix("NOSCRIPT")
        return RedisError(
            code: noScript ? .noScript : .server,
            command: command.name,
            serverMessage: message,
            message: noScript
                ? "Redis at \(url.redacted) does not know the script of \(command.name) (\(message)): run it with RedisConnection.evalSHA or RedisCommand.evalSHA, which load it"
                : "Redis at \(url.redacted) rejected \(command.name): \(message)"
        )
    }
}

/// `signal(SIGPIPE, SIG_IGN)`, run once before the first connect: hiredis writes with write(2), and a write
/// to a socket the server closed would otherwise kill the process.
private let ignoreSIGPIPE: Void = baton_ignore_sigpipe()

extension RedisConnection {
    /// Redis's clock (`TIME`) in milliseconds since 1970: the clock the scripts use for leases, timers and indexes.
    public func serverTimeMilliseconds() async throws -> Int64 {
        let time = try await send("TIME").array ?? []
        return (Int64(time.first?.string ?? "") ?? 0) * 1000 + (Int64(time.dropFirst().first?.string ?? "") ?? 0) / 1000
    }
}
