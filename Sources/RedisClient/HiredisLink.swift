import CHiredis
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The hiredis context of one connection, confined to the connection's thread.
///
/// Not `Sendable`: it is created on the connection thread and never leaves it. It owns the
/// `redisContext` and frees it exactly once (on a lost connection, or in `deinit`).
final class HiredisLink {
    private let configuration: RedisConfiguration
    private let logger: Logger
    private var context: UnsafeMutablePointer<redisContext>?
    /// SHA1s of the scripts this connection has loaded since it connected.
    private var loadedScripts: Set<String> = []
    private var consecutiveFailures = 0
    private var nextAttempt = ContinuousClock.now
    private var everConnected = false
    /// The RESP encoding of the command being appended (reused: its capacity stays).
    private var resp: [UInt8] = []

    init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    deinit {
        disconnect()
    }

    private var url: RedisURL { configuration.url }

    // MARK: - Running a batch

    /// Runs every command of every request in one pipeline (one write, then one read per command) and
    /// returns each request's replies or error, in request order.
    func run(_ requests: [RequestQueue.Request], queue: RequestQueue) -> [Result<[RedisReply], RedisError>] {
        if let context, peerClosed(context) {
            logger.info("Redis closed the idle connection; reconnecting", metadata: [LogKey.url: "\(url.redacted)"])
            disconnect()
        }
        if context == nil {
            do {
                try connect(queue: queue)
            } catch {
                return Array(repeating: .failure(error), count: requests.count)
            }
        }
        guard let context else {
            return Array(repeating: .failure(closedError()), count: requests.count)
        }

        // Lay out the pipeline: a SCRIPT LOAD in front of the first EVALSHA of each script this
        // connection has not loaded yet, so a fresh connection never pays a NOSCRIPT round trip.
        var slots: [Slot] = []
        var loadsInBatch: Set<String> = []
        for (requestIndex, request) in requests.enumerated() {
            for command in request.commands {
                if let script = command.script, !loadedScripts.contains(script.sha1), loadsInBatch.insert(script.sha1).inserted {
                    slots.append(Slot(request: nil, command: RedisCommand("SCRIPT", "LOAD", script.source), loads: script))
                }
                slots.append(Slot(request: requestIndex, command: command, loads: nil))
            }
        }

        var replies = [[RedisReply]](repeating: [], count: requests.count)
        for index in requests.indices {
            replies[index].reserveCapacity(requests[index].commands.count)
        }
        var failed = [RedisError?](repeating: nil, count: requests.count)
        var loadErrors: [String: String] = [:]
        /// (request, position in that request's replies) of each EVALSHA that got NOSCRIPT.
        var retries: [(request: Int, position: Int, command: RedisCommand)] = []

        switch roundTrip(context, slots.map(\.command)) {
        case .failure(let failure):
            for (slotIndex, slot) in slots.enumerated() where slotIndex >= failure.index {
                if let request = slot.request, failed[request] == nil { failed[request] = failure.error }
            }
            for (slotIndex, reply) in failure.replies.enumerated() {
                let slot = slots[slotIndex]
                if let request = slot.request { replies[request].append(reply) }
            }
        case .success(let all):
            for (slot, reply) in zip(slots, all) {
                if let script = slot.loads {
                    if let message = reply.errorMessage {
                        loadErrors[script.sha1] = message
                    } else {
                        loadedScripts.insert(script.sha1)
                    }
                    continue
                }
                guard let request = slot.request else { continue }
                if let script = slot.command.script, let message = reply.errorMessage, message.hasPrefix("NOSCRIPT") {
                    if let loadError = loadErrors[script.sha1] {
                        replies[request].append(.error(loadError))
                        continue
                    }
                    loadedScripts.remove(script.sha1)
                    retries.append((request, replies[request].count, slot.command))
                }
                replies[request].append(reply)
            }
        }

        if !retries.isEmpty, let context = self.context {
            retryScripts(context, retries: retries, replies: &replies, failed: &failed)
        }

        return requests.indices.map { index in
            if let error = failed[index] { return .failure(error) }
            return .success(replies[index])
        }
    }

    /// The server forgot scripts (SCRIPT FLUSH): load them again and re-run their EVALSHAs, in one round trip.
    private func retryScripts(
        _ context: UnsafeMutablePointer<redisContext>,
        retries: [(request: Int, position: Int, command: RedisCommand)],
        replies: inout [[RedisReply]],
        failed: inout [RedisError?]
    ) {
        logger.debug("Redis answered NOSCRIPT; loading the scripts again", metadata: [LogKey.url: "\(url.redacted)"])
        var commands: [RedisCommand] = []
        var loads: [RedisScript] = []
        for retry in retries {
            guard let script = retry.command.script, !loads.contains(script) else { continue }
            loads.append(script)
            commands.append(RedisCommand("SCRIPT", "LOAD", script.source))
        }
        commands.append(contentsOf: retries.map(\.command))
        switch roundTrip(context, commands) {
        case .failure(let failure):
            for retry in retries where failed[retry.request] == nil {
                failed[retry.request] = failure.error
            }
        case .success(let all):
            var loadErrors: [String: String] = [:]
            for (script, reply) in zip(loads, all) {
                if let message = reply.errorMessage {
                    loadErrors[script.sha1] = message
                } else {
                    loadedScripts.insert(script.sha1)
                }
            }
            for (retry, reply) in zip(retries, all.dropFirst(loads.count)) {
                if let script = retry.command.script, let loadError = loadErrors[script.sha1] {
                    replies[retry.request][retry.position] = .error(loadError)
                } else {
                    replies[retry.request][retry.position] = reply
                }
            }
        }
    }

    private struct Slot {
        /// The request the reply belongs to; nil for a SCRIPT LOAD the connection added.
        let request: Int?
        let command: RedisCommand
        /// The script a SCRIPT LOAD slot loads.
        let loads: RedisScript?
    }

    private struct RoundTripFailure: Error {
        /// The index of the first command without a reply.
        let index: Int
        /// The replies read before the failure.
        let replies: [RedisReply]
        let error: RedisError
        /// hiredis's description of the failure, e.g. "Server closed the connection".
        let reason: String
    }

    /// Appends every command, then reads one reply per command. On an I/O failure the context is freed.
    private func roundTrip(_ context: UnsafeMutablePointer<redisContext>, _ commands: [RedisCommand]) -> Result<
        [RedisReply], RoundTripFailure
    > {
        for command in commands {
            guard append(context, command) else {
                let error = RedisError(
                    code: .protocol,
                    command: command.name,
                    message: "could not encode \(command.name) for Redis at \(url.redacted) (out of memory); nothing was sent"
                )
                disconnect()
                return .failure(RoundTripFailure(index: 0, replies: [], error: error, reason: "out of memory"))
            }
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for command in commands {
            var raw: UnsafeMutableRawPointer?
            let status = redisGetReply(context, &raw)
            let savedErrno = errno
            guard status == REDIS_OK, let raw else {
                let error = ioError(context, errno: savedErrno, command: command.name)
                let reason = String(cString: baton_redis_errstr(context))
                disconnect()
                return .failure(RoundTripFailure(index: replies.count, replies: replies, error: error, reason: reason))
            }
            let reply = raw.assumingMemoryBound(to: redisReply.self)
            replies.append(Self.convert(reply))
            freeReplyObject(raw)
        }
        return .success(replies)
    }

    /// Appends one command to hiredis's output buffer, encoded here (``RedisCommand/appendRESP(to:)``) into a buffer
    /// this link reuses: hiredis's own argv formatting prints each length with a `printf`-like formatter and grows its
    /// string piece by piece (~3 % of a worker's CPU on the step chain, perf, sixteenth session).
    private func append(_ context: UnsafeMutablePointer<redisContext>, _ command: RedisCommand) -> Bool {
        guard command.count > 0 else { return true }
        // A buffer grown past 1 MB by one large command (a staged checkpoint) is not kept for the connection's life.
        if resp.capacity > 1 << 20 { resp = [] } else { resp.removeAll(keepingCapacity: true) }
        command.appendRESP(to: &resp)
        return resp.withUnsafeBufferPointer { bytes -> Bool in
            guard let base = bytes.baseAddress else { return false }
            return redisAppendFormattedCommand(context, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), bytes.count) == REDIS_OK
        }
    }

    /// Converts a reply tree into a ``RedisReply``; the caller frees the root once.
    static func convert(_ reply: UnsafePointer<redisReply>) -> RedisReply {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING:
            return .bulkString(bytes(node))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: bytes(node), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: bytes(node), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(node.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            guard let elements = node.element else { return .array([]) }
            var result: [RedisReply] = []
            result.reserveCapacity(node.elements)
            for index in 0..<node.elements {
                result.append(elements[index].map { convert($0) } ?? .null)
            }
            return .array(result)
        default:
            return .error("ERR unknown RESP reply type \(node.type)")
        }
    }

    private static func bytes(_ node: redisReply) -> [UInt8] {
        guard let pointer = node.str, node.len > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: node.len))
    }

    // MARK: - Connecting

    /// Opens a fresh context (waiting out the reconnect backoff first), then AUTH, SELECT and PING in one round trip.
    private func connect(queue: RequestQueue) throws(RedisError) {
        if ContinuousClock.now < nextAttempt {
            guard queue.sleep(until: nextAttempt) else { throw closedError() }
        }
        let attemptStart = ContinuousClock.now
        guard let context = redisConnectWithTimeout(url.host, Int32(clamping: url.port), makeTimeval(configuration.connectTimeout)) else {
            throw connectFailed(code: .connectionFailed, "could not allocate a connection", fix: "the process is out of memory")
        }
        if context.pointee.err != 0 {
            let reason = String(cString: baton_redis_errstr(context))
            redisFree(context)
            let elapsed = attemptStart.duration(to: .now)
            throw connectFailed(
                code: .connectionFailed,
                "could not connect to Redis at \(url.redacted) (\(reason)) after \(elapsed.humanReadable)",
                fix: "check that Redis is running there and that the URL's host and port are right"
            )
        }
        _ = redisSetTimeout(context, makeTimeval(configuration.commandTimeout))
        self.context = context

        var handshake: [RedisCommand] = []
        if let password = url.password {
            handshake.append(url.username.map { RedisCommand("AUTH", $0, password) } ?? RedisCommand("AUTH", password))
        }
        if url.database != 0 {
            handshake.append(RedisCommand("SELECT", url.database))
        }
        handshake.append(RedisCommand("PING"))

        switch roundTrip(context, handshake) {
        case .failure(let failure) where failure.error.code == .timeout:
            // A server that accepts the connection and then stalls (a fork for a save, a long script, a loaded
            // box) is not a wrong port: say so, with the code a caller retries on.
            let names = handshake.map(\.name).joined(separator: ", ")
            throw connectFailed(
                code: .timeout,
                "connected to Redis at \(url.redacted) but it did not answer the handshake (\(names)) within "
                    + "\(configuration.commandTimeout.humanReadable)",
                fix: "the server is stalled or overloaded; the connection retries on its own, or raise commandTimeout",
                command: handshake[failure.index].name
            )
        case .failure(let failure):
            throw connectFailed(
                code: .connectionFailed,
                "connected to Redis at \(url.redacted) but the handshake failed (\(failure.reason))",
                fix: "check that the port is a Redis server"
            )
        case .success(let replies):
            for (command, reply) in zip(handshake, replies) {
                guard let message = reply.errorMessage else { continue }
                disconnect()
                switch command.name {
                case "AUTH":
                    throw connectFailed(
                        code: .authenticationFailed,
                        "Redis at \(url.redacted) refused AUTH: \(message)",
                        serverMessage: message,
                        fix: "check the user name and password in the Redis URL (percent-encode special characters)",
                        command: "AUTH"
                    )
                case "SELECT":
                    throw connectFailed(
                        code: .connectionFailed,
                        "Redis at \(url.redacted) refused SELECT \(url.database): \(message)",
                        serverMessage: message,
                        fix: "use a database number below the server's 'databases' setting in the URL path",
                        command: "SELECT"
                    )
                default:
                    let needsPassword = message.hasPrefix("NOAUTH")
                    throw connectFailed(
                        code: needsPassword ? .authenticationFailed : .connectionFailed,
                        "Redis at \(url.redacted) refused \(command.name): \(message)",
                        serverMessage: message,
                        fix: needsPassword
                            ? "the server requires a password: give it in the URL as redis://:PASSWORD@host:port/db"
                            : "check the server's state and configuration",
                        command: command.name
                    )
                }
            }
        }

        loadedScripts.removeAll()
        consecutiveFailures = 0
        logger.log(
            level: everConnected ? .info : .debug,
            everConnected ? "Reconnected to Redis" : "Connected to Redis",
            metadata: [LogKey.url: "\(url.redacted)"]
        )
        everConnected = true
    }

    private func connectFailed(
        code: RedisError.Code,
        _ what: String,
        serverMessage: String? = nil,
        fix: String,
        command: String? = nil
    ) -> RedisError {
        consecutiveFailures += 1
        let delay = configuration.reconnectBackoff.delay(afterFailures: consecutiveFailures)
        nextAttempt = .now + delay
        logger.debug(
            "Redis connect attempt failed",
            metadata: [LogKey.url: "\(url.redacted)", LogKey.failures: "\(consecutiveFailures)", LogKey.error: "\(what)"]
        )
        return RedisError(code: code, command: command, serverMessage: serverMessage, message: "\(what): \(fix)")
    }

    /// Frees the context (exactly once: the pointer is cleared).
    func disconnect() {
        if let context {
            redisFree(context)
            self.context = nil
        }
    }

    /// True when a connection with no replies pending is readable: the server closed it (EOF) or sent
    /// something unasked; either way it cannot be used.
    private func peerClosed(_ context: UnsafeMutablePointer<redisContext>) -> Bool {
        var descriptor = pollfd(fd: baton_redis_fd(context), events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) > 0
    }

    private func ioError(_ context: UnsafeMutablePointer<redisContext>, errno savedErrno: Int32, command: String) -> RedisError {
        let reason = String(cString: baton_redis_errstr(context))
        let err = context.pointee.err
        if err == REDIS_ERR_IO, savedErrno == EAGAIN || savedErrno == EWOULDBLOCK {
            logger.warning(
                "Redis command timed out; reconnecting", metadata: [LogKey.url: "\(url.redacted)", LogKey.command: "\(command)"])
            return RedisError(
                code: .timeout,
                command: command,
                message:
                    "no reply from Redis at \(url.redacted) to \(command) within \(configuration.commandTimeout.humanReadable); it may or may not have run. "
                    + "The connection reconnects on its own: retry if the command is safe to repeat, or raise commandTimeout"
            )
        }
        if err == REDIS_ERR_PROTOCOL {
            return RedisError(
                code: .protocol,
                command: command,
                message:
                    "Redis at \(url.redacted) sent a reply that could not be parsed (\(reason)) to \(command); it may or may not have run: check that the port is a Redis server"
            )
        }
        logger.warning(
            "Redis connection lost; reconnecting",
            metadata: [LogKey.url: "\(url.redacted)", LogKey.command: "\(command)", LogKey.error: "\(reason)"]
        )
        return RedisError(
            code: .connectionLost,
            command: command,
            message:
                "the connection to Redis at \(url.redacted) was lost during \(command) (\(reason)); it may or may not have run. "
                + "The connection reconnects on its own: retry if the command is safe to repeat"
        )
    }

    private func closedError() -> RedisError {
        RedisError(code: .closed, message: "the connection to Redis at \(url.redacted) is closed: open a new one")
    }
}

private func makeTimeval(_ duration: Duration) -> timeval {
    let (seconds, attoseconds) = duration.components
    return timeval(tv_sec: .init(clamping: seconds), tv_usec: .init(attoseconds / 1_000_000_000_000))
}
