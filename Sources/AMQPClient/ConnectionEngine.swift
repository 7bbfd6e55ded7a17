import CRabbitMQ
import Glibc
import Logging

/// The connection thread's side: owns the rabbitmq-c connection state, runs every C call, reads frames,
/// tracks confirms, assembles deliveries and recovers from channel and connection failures.
///
/// Lives on exactly one OS thread for its whole life (rabbitmq-c connections are not thread-safe), so it
/// is deliberately not `Sendable`.
final class ConnectionEngine {
    struct PendingPublish {
        var batch: PublishBatch
        var index: Int
        var exchange: String
        var routingKey: String
        var mandatory: Bool
        var returned: AMQPError?
    }

    enum PartialKind {
        case deliver(consumerTag: String, deliveryTag: UInt64, redelivered: Bool, exchange: String, routingKey: String)
        case returned(code: UInt16, text: String, exchange: String, routingKey: String)
    }

    struct PartialContent {
        var kind: PartialKind
        var properties = AMQPProperties()
        var expected: Int = -1
        var body: [UInt8] = []
    }

    final class ChannelState {
        /// The number the user's ``AMQPChannel`` and its deliveries know the channel by.
        let id: UInt16
        /// The channel number on the wire. After the broker closes the channel it is reopened on a fresh
        /// number (see ``ConnectionEngine/retiredWires``), so it can differ from `id`.
        var wire: UInt16
        var epoch: UInt64 = 0
        /// Delivery tags of this epoch not yet acked, nacked or rejected: a second settlement of one (which the
        /// broker answers with 406 "unknown delivery tag", closing the channel) is refused here instead.
        var unsettled: Set<UInt64> = []
        var open = false
        var confirms: Bool
        var prefetch: UInt16?
        var nextPublishSeq: UInt64 = 1
        var pending: [UInt64: PendingPublish] = [:]
        var lowestPending: UInt64 = 1
        var consumers: [String: ConsumerSpec] = [:]
        var partial: PartialContent?

        init(id: UInt16, confirms: Bool, prefetch: UInt16?) {
            self.id = id
            self.wire = id
            self.confirms = confirms
            self.prefetch = prefetch
        }
    }

    /// Thrown inside the engine when the connection must be rebuilt.
    struct ConnectionLost: Error {
        var error: AMQPError
    }

    let configuration: AMQPConfiguration
    let logger: Logger
    let queue: CommandQueue
    var conn: amqp_connection_state_t?
    var channels: [UInt16: ChannelState] = [:]
    /// The open (or opening) channels by wire number: where incoming frames go.
    var byWire: [UInt16: ChannelState] = [:]
    /// Wire numbers of this connection whose channel the broker closed. RabbitMQ repeats a consumer_timeout
    /// close on every channel tick until it has processed our close-ok, so more closes can follow on that
    /// number; answering one (or reopening the number while they may still come) makes the broker close the
    /// whole connection (503 "unimplemented method" / 504 "expected 'channel.open'"). Frames on a retired
    /// number are dropped; the number is used again only after ``retirement`` (when it was retired).
    var retiredWires: [UInt16: ContinuousClock.Instant] = [:]
    /// How long a number the broker closed stays unused: the old channel repeats its close (and may send
    /// deliveries) only until it has processed our close-ok, which takes milliseconds, or one
    /// `channel_tick_interval` (60 s by default) with a broker that is far behind.
    static let retirement: Duration = .seconds(60)
    var nextChannelID: UInt16 = 1
    var heartbeatSeconds: Int32 = 0
    var readyBatches: [String: (ChannelState, [AMQPDelivery])] = [:]
    let ackSink = AckSink()
    var consumerCounter = 0

    init(configuration: AMQPConfiguration, logger: Logger, queue: CommandQueue) {
        self.configuration = configuration
        self.logger = logger
        self.queue = queue
    }

    var endpoint: String { configuration.url.redacted }

    // MARK: - Thread body

    func run(startup: CheckedContinuation<Void, any Error>) {
        do {
            try connect()
            queue.state.withLock { $0.connected = true }
            startup.resume()
        } catch {
            for command in queue.closeAndTakeRemaining() { command.fail(closedError()) }
            queue.closeFDs()
            startup.resume(throwing: error)
            return
        }
        mainLoop()
    }

    private func closedError() -> AMQPError {
        AMQPError(.closed, operation: "use connection", endpoint: endpoint, fix: "the connection was closed; open a new one")
    }

    private func mainLoop() {
        while true {
            let commands = queue.takeAll()
            for (index, command) in commands.enumerated() {
                if case .close(let done) = command {
                    // What was buffered (publishes, acks) goes out before the close; a failure here changes nothing.
                    try? flushOutput()
                    shutdown()
                    // What was taken with the close never runs: fail it (a continuation left alone would suspend its
                    // caller forever, e.g. a consumer's cancel racing the connection's close).
                    let error = closedError()
                    for rest in commands[(index + 1)...] { rest.fail(error) }
                    done?.resume()
                    return
                }
                // Publishes and acks of one pass are buffered and go out together; anything else (a synchronous
                // call, a channel's open or close) follows what is buffered, in order.
                switch command {
                case .publish, .settle: break
                default: flushOrDrop()
                }
                execute(command)
            }
            settleAckAfter()
            if conn != nil {
                do {
                    // Before anything is read: a frame read may make rabbitmq-c answer on its own (a close-ok), and
                    // that answer must follow the buffered frames.
                    try flushOutput()
                    try readAvailable()
                    settleAckAfter()
                } catch let lost as ConnectionLost {
                    connectionLost(lost.error)
                } catch {
                    connectionLost(AMQPError(.protocolError, operation: "read", endpoint: endpoint, fix: "\(error)"))
                }
            }
            if conn == nil {
                if !reconnectLoop() { return }
                continue
            }
            waitForActivity()
        }
    }

    /// The publishes and acks of this pass of the loop, encoded, not yet sent (``FrameWriter``).
    private var output = FrameWriter()

    /// Sends what ``output`` holds. Called before the thread waits (poll, a synchronous call's reply), before it reads
    /// and before anything rabbitmq-c writes itself, so frames leave in the order they were made.
    private func flushOutput() throws(ConnectionLost) {
        guard !output.isEmpty else { return }
        guard let conn else {
            output.reset()
            return
        }
        // Heartbeats off: wait for the socket as long as rabbitmq-c would (a broker's resource alarm can hold it).
        let limit: Duration? = heartbeatSeconds > 0 ? .seconds(2 * Int64(heartbeatSeconds)) : nil
        switch output.flush(to: amqp_get_sockfd(conn), stallLimit: limit) {
        case nil:
            return
        case .failed(let code):
            throw ConnectionLost(
                error: AMQPError(
                    .connectionLost, operation: "write", serverText: String(cString: strerror(code)), endpoint: endpoint,
                    fix: "the connection will be re-established; publishes in flight fail and are retried"))
        case .stalled(let limit):
            throw ConnectionLost(
                error: AMQPError(
                    .connectionLost, operation: "write", serverText: "the broker read nothing for \(limit)", endpoint: endpoint,
                    fix: "the broker is blocked (a memory or disk alarm) or unreachable; the connection will be re-established"))
        }
    }

    /// ``flushOutput()`` where nothing can throw: a failed write drops the connection (which fails what was in flight).
    private func flushOrDrop() {
        do {
            try flushOutput()
        } catch {
            connectionLost(error.error)
        }
    }

    /// Sleeps in poll(2) until the socket or the wake pipe is readable, or half a heartbeat passed.
    private func waitForActivity() {
        flushOrDrop()
        guard let conn else { return }
        if amqp_frames_enqueued(conn) != 0 || amqp_data_in_buffer(conn) != 0 { return }
        let timeoutMs: Int32 = heartbeatSeconds > 0 ? max(heartbeatSeconds * 1000 / 2, 100) : 1000
        var fds = [
            pollfd(fd: amqp_get_sockfd(conn), events: Int16(POLLIN), revents: 0),
            pollfd(fd: queue.readFD, events: Int16(POLLIN), revents: 0),
        ]
        guard queue.prepareToSleep() else { return }
        _ = poll(&fds, 2, timeoutMs)
        queue.wokeUp(pipeReadable: fds[1].revents != 0)
    }

    // MARK: - Connect and recover

    private func seconds(_ d: Duration) -> timeval {
        let (s, attoseconds) = d.components
        return timeval(tv_sec: Int(s), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }

    func connect() throws {
        guard let state = amqp_new_connection() else {
            throw AMQPError(.connectionFailed, operation: "connect", endpoint: endpoint, fix: "out of memory")
        }
        var ok = false
        defer { if !ok { amqp_destroy_connection(state) } }
        guard let socket = amqp_tcp_socket_new(state) else {
            throw AMQPError(.connectionFailed, operation: "connect", endpoint: endpoint, fix: "could not create a socket")
        }
        var timeout = seconds(configuration.connectTimeout)
        let url = configuration.url
        let status = amqp_socket_open_noblock(socket, url.host, Int32(url.port), &timeout)
        if status != AMQP_STATUS_OK.rawValue {
            let reason = CDecode.libraryError(status)
            throw AMQPError(
                .connectionFailed, operation: "connect", serverText: reason, endpoint: endpoint,
                fix:
                    "is RabbitMQ running and reachable at \(url.host):\(url.port)? Start a local one with `baton services start`, or set BATON_AMQP_URL / --amqp"
            )
        }
        _ = amqp_set_handshake_timeout(state, &timeout)
        var rpcTimeout = seconds(configuration.rpcTimeout)
        _ = amqp_set_rpc_timeout(state, &rpcTimeout)

        let arena = CArena()
        var properties = arena.table([
            "connection_name": .string(configuration.connectionName),
            "product": "baton-amqp-client",
            "capabilities": .table([
                "authentication_failure_close": true, "publisher_confirms": true, "consumer_cancel_notify": true,
                "basic.nack": true, "connection.blocked": true,
            ]),
        ])
        let heartbeat = Int32(clamping: configuration.heartbeat.components.seconds)
        let reply = baton_amqp_login_plain(
            state, arena.cString(url.vhost), 0, configuration.frameMax, heartbeat, &properties, arena.cString(url.user),
            arena.cString(url.password))
        withExtendedLifetime(arena) {}
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            break
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let code = close.reply_code
            let text = CDecode.string(close.reply_text)
            var okMethod = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &okMethod)
            if code == 403 {
                throw AMQPError(
                    .accessRefused, operation: "login as '\(url.user)'", serverCode: code, serverText: text, endpoint: endpoint,
                    fix: "check the user and password in BATON_AMQP_URL / --amqp (the guest user may only connect over loopback)")
            }
            if code == 530 {
                throw AMQPError(
                    .accessRefused, operation: "open vhost '\(url.vhost)'", serverCode: code, serverText: text, endpoint: endpoint,
                    fix: "create the vhost (rabbitmqctl add_vhost) and grant the user permissions, or fix the vhost in the URL")
            }
            throw AMQPError(
                .connectionFailed, operation: "login", serverCode: code, serverText: text, endpoint: endpoint, fix: "see the broker's log")
        default:
            let text = CDecode.libraryError(reply.library_error)
            throw AMQPError(
                .connectionFailed, operation: "AMQP handshake", serverText: text, endpoint: endpoint,
                fix:
                    "the server at \(url.host):\(url.port) did not complete an AMQP 0-9-1 handshake; is it RabbitMQ, and are the credentials right?"
            )
        }
        heartbeatSeconds = amqp_get_heartbeat(state)
        conn = state
        ok = true
        logger.debug("AMQP connected", metadata: ["amqp.endpoint": "\(endpoint)", "amqp.heartbeat": "\(heartbeatSeconds)"])
    }

    /// Fails everything in flight, drops the connection state and marks channels for restoration.
    func connectionLost(_ error: AMQPError) {
        logger.warning("AMQP connection lost; reconnecting", metadata: ["amqp.endpoint": "\(endpoint)", "error": "\(error)"])
        if let conn {
            amqp_destroy_connection(conn)
            self.conn = nil
        }
        output.reset()
        queue.state.withLock { $0.connected = false }
        retiredWires = [:]
        for channel in channels.values {
            failPending(channel, with: error)
            flushBatch(channel)
            channel.open = false
            channel.epoch &+= 1
            channel.unsettled = []
            channel.partial = nil
        }
    }

    private func failPending(_ channel: ChannelState, with error: AMQPError) {
        let pending = channel.pending.sorted { $0.key < $1.key }
        channel.pending = [:]
        channel.nextPublishSeq = 1
        channel.lowestPending = 1
        for (_, publish) in pending {
            var failure = error
            failure.operation = "publish to '\(publish.exchange)' with key '\(publish.routingKey)'"
            publish.batch.resolve(publish.index, failure)
        }
    }

    /// Waits with backoff and reconnects; returns false when the connection was closed meanwhile.
    private func reconnectLoop() -> Bool {
        let policy = configuration.reconnect
        var delay = policy.initialDelay
        var attempt = 0
        while true {
            let deadline = ContinuousClock.now + (policy.enabled ? delay : .seconds(3600))
            while ContinuousClock.now < deadline {
                for command in queue.takeAll() {
                    if case .close(let done) = command {
                        shutdown()
                        done?.resume()
                        return false
                    }
                    command.fail(
                        AMQPError(
                            .notConnected, operation: "use connection", endpoint: endpoint,
                            fix: "the connection to RabbitMQ is down and reconnecting (attempt \(attempt + 1)); retry later"))
                }
                let remaining = deadline - ContinuousClock.now
                let ms = Int32(
                    clamping: max(1, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000))
                var fds = [pollfd(fd: queue.readFD, events: Int16(POLLIN), revents: 0)]
                guard queue.prepareToSleep() else { continue }
                let ready = poll(&fds, 1, ms) > 0
                queue.wokeUp(pipeReadable: ready)
            }
            guard policy.enabled else { continue }
            attempt += 1
            do {
                try connect()
                try restoreChannels()
                let count = queue.state.withLock { state -> Int in
                    state.connected = true
                    state.reconnects += 1
                    return state.reconnects
                }
                logger.info(
                    "AMQP reconnected",
                    metadata: ["amqp.endpoint": "\(endpoint)", "amqp.reconnects": "\(count)", "amqp.attempts": "\(attempt)"])
                return true
            } catch let lost as ConnectionLost {
                connectionLost(lost.error)
            } catch {
                logger.debug("AMQP reconnect attempt failed", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                if let conn {
                    amqp_destroy_connection(conn)
                    self.conn = nil
                }
            }
            let jitter = Double.random(in: 0.8...1.2)
            delay = min(delay * 2, policy.maxDelay) * jitter
        }
    }

    private func restoreChannels() throws {
        for channel in channels.values.sorted(by: { $0.id < $1.id }) {
            try openOnBroker(channel)
        }
    }

    /// channel.open, then confirm.select, basic.qos and basic.consume for every consumer of the channel.
    private func openOnBroker(_ channel: ChannelState) throws {
        try flushOutput()  // synchronous calls follow: what is buffered goes first
        guard let conn else { throw ConnectionLost(error: notConnected("channel.open")) }
        if retiredWires[channel.wire] != nil || byWire[channel.wire].map({ $0 !== channel }) ?? false {
            guard let wire = freeNumber(wireOnly: true) else {
                throw AMQPError(.invalidArgument, operation: "channel.open", endpoint: endpoint, fix: "too many channels")
            }
            channel.wire = wire
        }
        byWire[channel.wire] = channel
        _ = amqp_channel_open(conn, channel.wire)
        try check(amqp_get_rpc_reply(conn), channel: channel, operation: "channel.open \(channel.id)", reopen: false)
        channel.open = true
        channel.pending = [:]
        channel.nextPublishSeq = 1
        channel.lowestPending = 1
        if channel.confirms {
            _ = amqp_confirm_select(conn, channel.wire)
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: "confirm.select", reopen: false)
        }
        if let prefetch = channel.prefetch {
            _ = amqp_basic_qos(conn, channel.wire, 0, prefetch, 0)
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: "basic.qos", reopen: false)
        }
        for (tag, spec) in channel.consumers.sorted(by: { $0.key < $1.key }) {
            do {
                try startConsumer(channel, spec)
            } catch let error as AMQPError {
                logger.warning("AMQP consumer could not be restored", metadata: ["amqp.consumer": "\(tag)", "error": "\(error)"])
                channel.consumers[tag] = nil
                spec.buffer.finish()
                if !channel.open { return try openOnBroker(channel) }
            }
        }
    }

    private func startConsumer(_ channel: ChannelState, _ spec: ConsumerSpec) throws {
        guard let conn else { throw ConnectionLost(error: notConnected("basic.consume")) }
        let arena = CArena()
        _ = amqp_basic_consume(
            conn, channel.wire, arena.bytes(spec.queue), arena.bytes(spec.tag), 0, 0, spec.exclusive ? 1 : 0, arena.table(spec.arguments))
        withExtendedLifetime(arena) {}
        try check(amqp_get_rpc_reply(conn), channel: channel, operation: "basic.consume from '\(spec.queue)'", reopen: false)
    }

    /// A channel number (1…2047, round robin) that no channel has on the wire and that is not retired; with
    /// `wireOnly` false also no channel's id (a new channel starts with id == wire number).
    private func freeNumber(wireOnly: Bool) -> UInt16? {
        for _ in 0..<2047 {
            let number = nextChannelID
            nextChannelID = nextChannelID == 2047 ? 1 : nextChannelID + 1
            if let retired = retiredWires[number] {
                guard ContinuousClock.now - retired >= Self.retirement else { continue }
                retiredWires[number] = nil
            }
            if byWire[number] == nil, wireOnly || channels[number] == nil { return number }
        }
        return nil
    }

    private func notConnected(_ operation: String) -> AMQPError {
        AMQPError(.notConnected, operation: operation, endpoint: endpoint, fix: "the connection to RabbitMQ is down; retry later")
    }

    /// Turns an RPC reply into success, an ``AMQPError`` (channel error: close-ok sent, channel reopened when
    /// `reopen`), or ``ConnectionLost``.
    private func check(_ reply: amqp_rpc_reply_t, channel: ChannelState?, operation: String, reopen: Bool = true) throws {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD, let channel {
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                let error = channelClosedByServer(
                    channel, code: close.reply_code, text: CDecode.string(close.reply_text), operation: operation, reopen: reopen)
                throw error
            }
            if reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD {
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                throw ConnectionLost(error: connectionClosedByServer(close, operation: operation))
            }
            throw ConnectionLost(
                error: AMQPError(.protocolError, operation: operation, endpoint: endpoint, fix: "unexpected reply method \(reply.reply.id)")
            )
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let text = CDecode.libraryError(reply.library_error)
            let code: AMQPError.Code = reply.library_error == AMQP_STATUS_TIMEOUT.rawValue ? .timeout : .connectionLost
            throw ConnectionLost(
                error: AMQPError(
                    code, operation: operation, serverText: text, endpoint: endpoint, fix: "the connection will be re-established; retry"))
        default:
            throw ConnectionLost(error: AMQPError(.protocolError, operation: operation, endpoint: endpoint, fix: "no reply"))
        }
    }

    private func connectionClosedByServer(_ close: amqp_connection_close_t, operation: String) -> AMQPError {
        if let conn {
            var ok = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok)
        }
        return AMQPError(
            .connectionError, operation: operation, serverCode: close.reply_code, serverText: CDecode.string(close.reply_text),
            endpoint: endpoint, fix: "the broker closed the connection; it is being re-established")
    }

    /// Answers a server channel.close with close-ok (otherwise re-opening the id kills the connection), fails
    /// what was in flight on the channel and, when `reopen`, opens it again with its settings and consumers.
    private func channelClosedByServer(_ channel: ChannelState, code: UInt16, text: String, operation: String, reopen: Bool) -> AMQPError {
        let error = AMQPError(
            .channelError, operation: operation, serverCode: code, serverText: text, endpoint: endpoint,
            fix: Self.fix(forChannelCode: code, text: text))
        logger.warning("AMQP channel closed by the broker", metadata: ["amqp.channel": "\(channel.id)", "error": "\(error)"])
        if let conn {
            var ok = amqp_channel_close_ok_t(dummy: 0)
            _ = amqp_send_method(conn, channel.wire, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
        }
        if byWire[channel.wire] === channel { byWire[channel.wire] = nil }
        retiredWires[channel.wire] = ContinuousClock.now
        channel.open = false
        channel.epoch &+= 1
        channel.unsettled = []
        channel.partial = nil
        failPending(channel, with: error)
        flushBatch(channel)
        if reopen {
            do {
                try openOnBroker(channel)
            } catch let lost as ConnectionLost {
                connectionLost(lost.error)
            } catch {
                logger.warning("AMQP channel could not be reopened", metadata: ["amqp.channel": "\(channel.id)", "error": "\(error)"])
            }
        }
        return error
    }

    static func fix(forChannelCode code: UInt16, text: String) -> String {
        switch code {
        case 404: return "the exchange or queue does not exist: declare it first (baton worker declares Baton's topology at start)"
        case 406 where text.contains("inequivalent arg"):
            return "a queue or exchange with this name exists with other arguments: delete it or use the arguments it was declared with"
        case 406 where text.contains("timed out"):
            return
                "a delivery stayed unacknowledged longer than the broker's consumer_timeout: raise consumer_timeout or shorten the step time limit"
        case 403: return "the user lacks permission for this resource in the vhost: grant it with rabbitmqctl set_permissions"
        case 405: return "the resource is locked by an exclusive consumer or queue of another connection"
        case 406 where text.contains("unknown delivery tag"):
            return
                "an ack or nack named a delivery this channel did not issue or already settled (a client bug, not the request's): the channel was reopened and the broker redelivers what was unacknowledged"
        default: return "the channel was reopened; fix the request and retry"
        }
    }

    // MARK: - Commands

    func execute(_ command: Command) {
        do {
            try run(command)
        } catch let lost as ConnectionLost {
            connectionLost(lost.error)
        } catch {
            // run(_:) resolves its own command on every other path.
        }
    }

    private func channel(_ id: UInt16, for operation: String) throws -> ChannelState {
        guard conn != nil else { throw notConnected(operation) }
        guard let channel = channels[id] else {
            throw AMQPError(.closed, operation: operation, endpoint: endpoint, fix: "the channel was closed; open a new one")
        }
        if !channel.open {
            try openOnBroker(channel)
        }
        return channel
    }

    private func run(_ command: Command) throws {
        guard let conn else {
            command.fail(notConnected("use connection"))
            return
        }
        switch command {
        case .close:
            return
        case .openChannel(let confirms, let prefetch, let continuation):
            guard let id = freeNumber(wireOnly: false) else {
                continuation.resume(
                    throwing: AMQPError(.invalidArgument, operation: "channel.open", endpoint: endpoint, fix: "too many channels"))
                return
            }
            let channel = ChannelState(id: id, confirms: confirms, prefetch: prefetch)
            do {
                try openOnBroker(channel)
                channels[channel.id] = channel
                continuation.resume(returning: channel.id)
            } catch let lost as ConnectionLost {
                if byWire[channel.wire] === channel { byWire[channel.wire] = nil }
                continuation.resume(throwing: lost.error)
                throw lost
            } catch {
                if byWire[channel.wire] === channel { byWire[channel.wire] = nil }
                continuation.resume(throwing: error)
            }

        case .rpc(let id, let rpc, let continuation):
            do {
                let channel = try channel(id, for: rpc.name)
                continuation.resume(returning: try perform(rpc, on: channel, conn: conn))
            } catch let lost as ConnectionLost {
                continuation.resume(throwing: lost.error)
                throw lost
            } catch {
                continuation.resume(throwing: error)
            }

        case .publish(let id, let messages, let batch):
            batch.sink = ackSink
            if messages.isEmpty, let ack = batch.ackAfter { ackSink.finished.append((ack, [])) }
            let channel: ChannelState
            do {
                channel = try self.channel(id, for: "basic.publish")
            } catch let lost as ConnectionLost {
                command.fail(lost.error)
                throw lost
            } catch let error as AMQPError {
                command.fail(error)
                return
            }
            let frameMax = Int(amqp_get_frame_max(conn))
            let arena = CArena()
            for (index, message) in messages.enumerated() {
                arena.reset()
                var properties = arena.properties(message.properties)
                let encoded = message.body.withUnsafeBytes { body in
                    output.publish(
                        channel: channel.wire, exchange: arena.bytes(message.exchange), routingKey: arena.bytes(message.routingKey),
                        mandatory: message.mandatory, properties: &properties, body: body, frameMax: frameMax)
                }
                withExtendedLifetime(arena) {}
                guard encoded else {
                    // Nothing of it was buffered: the broker never numbers it, so the channel's confirms stay in step.
                    batch.resolve(
                        index,
                        AMQPError(
                            .invalidArgument, operation: "publish to '\(message.exchange)' with key '\(message.routingKey)'",
                            endpoint: endpoint,
                            fix:
                                "the message's properties could not be encoded (a headers table larger than the frame size?); nothing was sent"
                        ))
                    continue
                }
                if channel.confirms {
                    channel.pending[channel.nextPublishSeq] = PendingPublish(
                        batch: batch, index: index, exchange: message.exchange, routingKey: message.routingKey, mandatory: message.mandatory
                    )
                    channel.nextPublishSeq += 1
                } else {
                    batch.resolve(index, nil)
                }
            }

        case .settle(let id, let epoch, let tags, let settlement, let continuation):
            guard let channel = channels[id], channel.open, channel.epoch == epoch else {
                continuation?.resume(
                    throwing: AMQPError(
                        .staleDelivery, operation: "settle delivery \(tags.first ?? 0)", endpoint: endpoint,
                        fix: "the channel it came on was closed or recovered; the broker redelivers the message"))
                return
            }
            var duplicate: UInt64?
            for tag in tags {
                guard Self.take(tag, settlement.multiple, from: channel) else {
                    duplicate = duplicate ?? tag
                    continue
                }
                switch settlement {
                case .ack(let multiple): output.ack(channel: channel.wire, tag: tag, multiple: multiple)
                case .nack(let multiple, let requeue): output.nack(channel: channel.wire, tag: tag, multiple: multiple, requeue: requeue)
                case .reject(let requeue): output.reject(channel: channel.wire, tag: tag, requeue: requeue)
                }
            }
            if let duplicate {
                continuation?.resume(
                    throwing: AMQPError(
                        .staleDelivery, operation: "settle delivery \(duplicate)", endpoint: endpoint,
                        fix: "the delivery was already acknowledged, rejected or nacked; settle each delivery once"))
                return
            }
            continuation?.resume()

        case .consume(let id, var spec, let continuation):
            do {
                let channel = try channel(id, for: "basic.consume")
                if spec.tag.isEmpty {
                    consumerCounter += 1
                    spec.tag = "\(configuration.connectionName).\(id).\(consumerCounter).\(UInt32.random(in: 0..<UInt32.max))"
                }
                try startConsumer(channel, spec)
                channel.consumers[spec.tag] = spec
                continuation.resume(returning: spec.tag)
            } catch let lost as ConnectionLost {
                spec.buffer.finish()
                continuation.resume(throwing: lost.error)
                throw lost
            } catch {
                spec.buffer.finish()
                continuation.resume(throwing: error)
            }

        case .cancel(let id, let tag, let continuation):
            guard let channel = channels[id], let spec = channel.consumers[tag] else {
                continuation.resume()
                return
            }
            flushBatch(channel)
            channel.consumers[tag] = nil
            if channel.open {
                let arena = CArena()
                _ = amqp_basic_cancel(conn, channel.wire, arena.bytes(tag))
                withExtendedLifetime(arena) {}
                do {
                    try check(amqp_get_rpc_reply(conn), channel: channel, operation: "basic.cancel")
                } catch let lost as ConnectionLost {
                    flushBatch(channel)
                    spec.buffer.finish()
                    continuation.resume()
                    throw lost
                } catch {}
            }
            flushBatch(channel)
            spec.buffer.finish()
            continuation.resume()

        case .closeChannel(let id, let continuation):
            guard let channel = channels.removeValue(forKey: id) else {
                continuation.resume()
                return
            }
            let error = AMQPError(.closed, operation: "use channel \(id)", endpoint: endpoint, fix: "the channel was closed")
            failPending(channel, with: error)
            flushBatch(channel)
            for spec in channel.consumers.values { spec.buffer.finish() }
            if channel.open {
                _ = amqp_channel_close(conn, channel.wire, Int32(AMQP_REPLY_SUCCESS))
                channel.open = false
            }
            if byWire[channel.wire] === channel { byWire[channel.wire] = nil }
            continuation.resume()
        }
    }

    private func perform(_ rpc: RPC, on channel: ChannelState, conn: amqp_connection_state_t) throws -> RPCResult {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        let id = channel.wire
        switch rpc {
        case .declareExchange(let name, let type, let durable, let autoDelete, let isInternal, let passive, let arguments):
            _ = amqp_exchange_declare(
                conn, id, arena.bytes(name), arena.bytes(type), passive ? 1 : 0, durable ? 1 : 0, autoDelete ? 1 : 0, isInternal ? 1 : 0,
                arena.table(arguments))
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: rpc.name)
            return .done
        case .deleteExchange(let name, let ifUnused):
            _ = amqp_exchange_delete(conn, id, arena.bytes(name), ifUnused ? 1 : 0)
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: rpc.name)
            return .done
        case .declareQueue(let name, let passive, let durable, let exclusive, let autoDelete, let arguments):
            let ok = amqp_queue_declare(
                conn, id, arena.bytes(name), passive ? 1 : 0, durable ? 1 : 0, exclusive ? 1 : 0, autoDelete ? 1 : 0, arena.table(arguments)
            )
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: rpc.name)
            guard let ok else { return .queue(AMQPQueueInfo(name: name, messageCount: 0, consumerCount: 0)) }
            return .queue(
                AMQPQueueInfo(
                    name: CDecode.string(ok.pointee.queue), messageCount: ok.pointee.message_count, consumerCount: ok.pointee.consumer_count
                ))
        case .deleteQueue(let name, let ifUnused, let ifEmpty):
            let ok = amqp_queue_delete(conn, id, arena.bytes(name), ifUnused ? 1 : 0, ifEmpty ? 1 : 0)
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: rpc.name)
            return .count(ok?.pointee.message_count ?? 0)
        case .purgeQueue(let name):
            let ok = amqp_queue_purge(conn, id, arena.bytes(name))
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: rpc.name)
            return .count(ok?.pointee.message_count ?? 0)
        case .bindQueue(let queue, let exchange, let key, let arguments):
            _ = amqp_queue_bind(conn, id, arena.bytes(queue), arena.bytes(exchange), arena.bytes(key), arena.table(arguments))
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: rpc.name)
            return .done
        case .unbindQueue(let queue, let exchange, let key, let arguments):
            _ = amqp_queue_unbind(conn, id, arena.bytes(queue), arena.bytes(exchange), arena.bytes(key), arena.table(arguments))
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: rpc.name)
            return .done
        case .qos(let prefetch):
            _ = amqp_basic_qos(conn, id, 0, prefetch, 0)
            try check(amqp_get_rpc_reply(conn), channel: channel, operation: rpc.name)
            channel.prefetch = prefetch
            return .done
        }
    }

    // MARK: - Reading frames

    /// Reads every frame that is already available (never blocks), then hands the deliveries of this read
    /// cycle to their consumers as one batch each.
    func readAvailable() throws {
        guard let conn else { return }
        var count = 0
        defer {
            flushAll()
            if let conn = self.conn { amqp_maybe_release_buffers(conn) }
        }
        while count < 4096 {
            var frame = amqp_frame_t()
            var zero = timeval(tv_sec: 0, tv_usec: 0)
            let status = amqp_simple_wait_frame_noblock(conn, &frame, &zero)
            if status == AMQP_STATUS_TIMEOUT.rawValue { return }
            guard status == AMQP_STATUS_OK.rawValue else {
                let code: AMQPError.Code = .connectionLost
                throw ConnectionLost(
                    error: AMQPError(
                        code, operation: "read", serverText: CDecode.libraryError(status), endpoint: endpoint,
                        fix: "the connection will be re-established"))
            }
            count += 1
            try handle(frame)
            if self.conn == nil { return }
        }
    }

    private func handle(_ frame: amqp_frame_t) throws {
        let channelID = frame.channel
        switch Int32(frame.frame_type) {
        case AMQP_FRAME_METHOD:
            try handleMethod(frame.payload.method, channelID: channelID)
        case AMQP_FRAME_HEADER:
            guard let channel = byWire[channelID], var partial = channel.partial else { return }
            if let decoded = frame.payload.properties.decoded {
                partial.properties = CDecode.properties(decoded.assumingMemoryBound(to: amqp_basic_properties_t.self).pointee)
            }
            partial.expected = Int(frame.payload.properties.body_size)
            partial.body.reserveCapacity(partial.expected)
            channel.partial = partial
            if partial.expected == 0 { complete(channel) }
        case AMQP_FRAME_BODY:
            guard let channel = byWire[channelID], channel.partial != nil else { return }
            let fragment = frame.payload.body_fragment
            if fragment.len > 0, let bytes = fragment.bytes {
                channel.partial!.body.append(contentsOf: UnsafeRawBufferPointer(start: bytes, count: fragment.len))
            }
            if channel.partial!.body.count >= channel.partial!.expected { complete(channel) }
        default:
            return  // heartbeats are consumed by the library
        }
    }

    private func handleMethod(_ method: amqp_method_t, channelID: UInt16) throws {
        switch method.id {
        case AMQP_BASIC_DELIVER_METHOD:
            let d = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            byWire[channelID]?.partial = PartialContent(
                kind: .deliver(
                    consumerTag: CDecode.string(d.consumer_tag), deliveryTag: d.delivery_tag, redelivered: d.redelivered != 0,
                    exchange: CDecode.string(d.exchange), routingKey: CDecode.string(d.routing_key)))
        case AMQP_BASIC_RETURN_METHOD:
            let r = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            byWire[channelID]?.partial = PartialContent(
                kind: .returned(
                    code: r.reply_code, text: CDecode.string(r.reply_text), exchange: CDecode.string(r.exchange),
                    routingKey: CDecode.string(r.routing_key)))
        case AMQP_BASIC_ACK_METHOD:
            let a = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            if let channel = byWire[channelID] { confirm(channel, tag: a.delivery_tag, multiple: a.multiple != 0, nack: false) }
        case AMQP_BASIC_NACK_METHOD:
            let n = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            if let channel = byWire[channelID] { confirm(channel, tag: n.delivery_tag, multiple: n.multiple != 0, nack: true) }
        case AMQP_CHANNEL_CLOSE_METHOD:
            let c = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            if let channel = byWire[channelID] {
                _ = channelClosedByServer(
                    channel, code: c.reply_code, text: CDecode.string(c.reply_text), operation: "channel \(channel.id)", reopen: true)
            } else if retiredWires[channelID] != nil {
                logger.debug("AMQP dropped a repeated close of a closed channel", metadata: ["amqp.wire": "\(channelID)"])
            } else if let conn {
                var ok = amqp_channel_close_ok_t(dummy: 0)
                _ = amqp_send_method(conn, channelID, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
            }
        case AMQP_CONNECTION_CLOSE_METHOD:
            let c = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            throw ConnectionLost(error: connectionClosedByServer(c, operation: "connection"))
        case AMQP_BASIC_CANCEL_METHOD:
            let c = method.decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            let tag = CDecode.string(c.consumer_tag)
            if let channel = byWire[channelID], let spec = channel.consumers.removeValue(forKey: tag) {
                logger.warning("AMQP consumer cancelled by the broker (queue deleted?)", metadata: ["amqp.consumer": "\(tag)"])
                flushBatch(channel)
                spec.buffer.finish()
            }
        case AMQP_CONNECTION_BLOCKED_METHOD:
            logger.warning("RabbitMQ blocked this connection (resource alarm: memory or disk); publishes wait until it clears")
        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            logger.info("RabbitMQ unblocked this connection")
        case AMQP_CHANNEL_CLOSE_OK_METHOD:
            return
        default:
            logger.debug("AMQP ignored method", metadata: ["amqp.method": "\(method.id)", "amqp.channel": "\(channelID)"])
        }
    }

    private func complete(_ channel: ChannelState) {
        guard let partial = channel.partial else { return }
        channel.partial = nil
        switch partial.kind {
        case .deliver(let consumerTag, let deliveryTag, let redelivered, let exchange, let routingKey):
            let delivery = AMQPDelivery(
                body: partial.body, properties: partial.properties, deliveryTag: deliveryTag, redelivered: redelivered, exchange: exchange,
                routingKey: routingKey, consumerTag: consumerTag, channelID: channel.id, epoch: channel.epoch)
            channel.unsettled.insert(deliveryTag)
            readyBatches[consumerTag, default: (channel, [])].1.append(delivery)
        case .returned(let code, let text, let exchange, let routingKey):
            // Returns arrive in publish order, right before the confirm of the same message: attribute this one
            // to the oldest unconfirmed mandatory publish with the same exchange and routing key.
            let match = channel.pending.filter {
                $0.value.mandatory && $0.value.returned == nil && $0.value.exchange == exchange && $0.value.routingKey == routingKey
            }.min { $0.key < $1.key }
            let error = AMQPError(
                .unroutable, operation: "publish to '\(exchange)' with key '\(routingKey)'", serverCode: code, serverText: text,
                endpoint: endpoint,
                fix: "no queue is bound to exchange '\(exchange)' for routing key '\(routingKey)': declare and bind one (or check the name)"
            )
            if let (seq, _) = match {
                channel.pending[seq]?.returned = error
            } else {
                logger.warning("AMQP message returned as unroutable", metadata: ["error": "\(error)"])
            }
        }
    }

    private func confirm(_ channel: ChannelState, tag: UInt64, multiple: Bool, nack: Bool) {
        func settle(_ seq: UInt64) {
            guard let publish = channel.pending.removeValue(forKey: seq) else { return }
            if nack {
                publish.batch.resolve(
                    publish.index,
                    AMQPError(
                        .nacked, operation: "publish to '\(publish.exchange)' with key '\(publish.routingKey)'", endpoint: endpoint,
                        fix:
                            "the broker refused the message: the target queue is full (x-overflow reject-publish) or unavailable; retry later or raise its max length"
                    ))
            } else {
                publish.batch.resolve(publish.index, publish.returned)
            }
        }
        if multiple {
            if tag >= channel.lowestPending {
                for seq in channel.lowestPending...tag { settle(seq) }
            }
            channel.lowestPending = max(channel.lowestPending, tag + 1)
        } else {
            settle(tag)
            if tag == channel.lowestPending {
                var next = tag + 1
                while next < channel.nextPublishSeq && channel.pending[next] == nil { next += 1 }
                channel.lowestPending = next
            }
        }
    }

    private func flushAll() {
        guard !readyBatches.isEmpty else { return }
        for (tag, entry) in readyBatches { entry.0.consumers[tag]?.buffer.append(entry.1) }
        readyBatches.removeAll(keepingCapacity: true)
    }

    private func flushBatch(_ channel: ChannelState) {
        guard !readyBatches.isEmpty else { return }
        for (tag, entry) in readyBatches where entry.0 === channel {
            readyBatches[tag] = nil
            channel.consumers[tag]?.buffer.append(entry.1)
        }
    }

    /// Acks (or nacks with requeue, when a publish failed) the deliveries of finished ack-after publishes.
    ///
    /// The acks of one pass are coalesced per channel: the tags below the channel's lowest still-unsettled tag
    /// go out as one `basic.ack` with `multiple` (every delivery up to it is settled, by this pass or an earlier
    /// one, and deliveries arrive in tag order, so none below it can be in flight), the rest one by one. The broker
    /// then settles a batch's messages in one command instead of one per delivery. Nacks are written first, so a
    /// multiple ack never covers a delivery this pass nacks.
    func settleAckAfter() {
        guard !ackSink.finished.isEmpty else { return }
        let finished = ackSink.finished
        ackSink.finished = []
        var acks: [UInt16: [UInt64]] = [:]
        for (ack, results) in finished {
            let ok = results.allSatisfy { $0 == nil }
            if ok { ack.beforeAck?() }
            guard conn != nil, let channel = channels[ack.channel], channel.open, channel.epoch == ack.epoch else { continue }
            for tag in ack.tags where Self.take(tag, false, from: channel) {
                if ok {
                    acks[ack.channel, default: []].append(tag)
                } else {
                    output.nack(channel: channel.wire, tag: tag, multiple: false, requeue: true)
                }
            }
        }
        if conn != nil {
            for (id, tags) in acks {
                guard let channel = channels[id] else { continue }
                for (tag, multiple) in Self.coalescedAcks(tags, lowestUnsettled: channel.unsettled.min()) {
                    output.ack(channel: channel.wire, tag: tag, multiple: multiple)
                }
            }
        }
        for (ack, results) in finished { ack.onSettled?(results) }
    }

    /// The `basic.ack` frames that settle `tags` (each still unacked at the broker) when `lowestUnsettled` is the
    /// channel's lowest tag left unsettled after them (nil: none): one `multiple` ack for every tag below it, one
    /// plain ack for each tag above it.
    static func coalescedAcks(_ tags: [UInt64], lowestUnsettled: UInt64?) -> [(tag: UInt64, multiple: Bool)] {
        let sorted = tags.sorted()
        let cut = lowestUnsettled ?? .max
        let below = sorted.prefix { $0 < cut }
        var frames: [(tag: UInt64, multiple: Bool)] = []
        if let last = below.last { frames.append((last, below.count > 1)) }
        for tag in sorted.dropFirst(below.count) { frames.append((tag, false)) }
        return frames
    }

    /// Marks `tag` settled (with `multiple`, every tag up to it); false when it is not an unsettled tag of
    /// the channel's current epoch (a second settlement), which must not reach the broker.
    static func take(_ tag: UInt64, _ multiple: Bool, from channel: ChannelState) -> Bool {
        if multiple {
            channel.unsettled = channel.unsettled.filter { $0 > tag }
            return true
        }
        return channel.unsettled.remove(tag) != nil
    }

    // MARK: - Shutdown

    private func shutdown() {
        let error = closedError()
        for command in queue.closeAndTakeRemaining() { command.fail(error) }
        for channel in channels.values {
            failPending(channel, with: error)
            flushBatch(channel)
            for spec in channel.consumers.values { spec.buffer.finish() }
        }
        settleAckAfter()
        channels = [:]
        byWire = [:]
        if let conn {
            _ = amqp_connection_close(conn, Int32(AMQP_REPLY_SUCCESS))
            amqp_destroy_connection(conn)
            self.conn = nil
        }
        queue.closeFDs()
        logger.debug("AMQP connection closed", metadata: ["amqp.endpoint": "\(endpoint)"])
    }
}
