import CRabbitMQ
import Glibc
import Synchronization

/// A request from any task to the connection thread.
enum Command: Sendable {
    case openChannel(confirms: Bool, prefetch: UInt16?, CheckedContinuation<UInt16, any Error>)
    case rpc(channel: UInt16, RPC, CheckedContinuation<RPCResult, any Error>)
    case publish(channel: UInt16, [AMQPMessage], PublishBatch)
    case settle(channel: UInt16, epoch: UInt64, tags: [UInt64], Settlement, CheckedContinuation<Void, any Error>?)
    case consume(channel: UInt16, ConsumerSpec, CheckedContinuation<String, any Error>)
    case cancel(channel: UInt16, tag: String, CheckedContinuation<Void, any Error>)
    case closeChannel(channel: UInt16, CheckedContinuation<Void, any Error>)
    case close(CheckedContinuation<Void, Never>?)

    /// Fails the request without running it.
    func fail(_ error: AMQPError) {
        switch self {
        case .openChannel(_, _, let c): c.resume(throwing: error)
        case .rpc(_, _, let c): c.resume(throwing: error)
        case .publish(_, let messages, let batch): for index in messages.indices { batch.resolve(index, error) }
        case .settle(_, _, _, _, let c): c?.resume(throwing: error)
        case .consume(_, let spec, let c):
            spec.buffer.finish()
            c.resume(throwing: error)
        case .cancel(_, _, let c): c.resume(throwing: error)
        case .closeChannel(_, let c): c.resume(throwing: error)
        case .close(let c): c?.resume()
        }
    }
}

/// Synchronous broker calls.
enum RPC: Sendable {
    case declareExchange(name: String, type: String, durable: Bool, autoDelete: Bool, internal: Bool, passive: Bool, arguments: AMQPTable)
    case deleteExchange(name: String, ifUnused: Bool)
    case declareQueue(name: String, passive: Bool, durable: Bool, exclusive: Bool, autoDelete: Bool, arguments: AMQPTable)
    case deleteQueue(name: String, ifUnused: Bool, ifEmpty: Bool)
    case purgeQueue(name: String)
    case bindQueue(queue: String, exchange: String, routingKey: String, arguments: AMQPTable)
    case unbindQueue(queue: String, exchange: String, routingKey: String, arguments: AMQPTable)
    case qos(prefetch: UInt16)

    var name: String {
        switch self {
        case .declareExchange(let name, _, _, _, _, _, _): "exchange.declare '\(name)'"
        case .deleteExchange(let name, _): "exchange.delete '\(name)'"
        case .declareQueue(let name, _, _, _, _, _): "queue.declare '\(name)'"
        case .deleteQueue(let name, _, _): "queue.delete '\(name)'"
        case .purgeQueue(let name): "queue.purge '\(name)'"
        case .bindQueue(let queue, let exchange, let key, _): "queue.bind '\(queue)' to '\(exchange)' with key '\(key)'"
        case .unbindQueue(let queue, let exchange, let key, _): "queue.unbind '\(queue)' from '\(exchange)' with key '\(key)'"
        case .qos(let prefetch): "basic.qos prefetch \(prefetch)"
        }
    }
}

enum RPCResult: Sendable {
    case done
    case queue(AMQPQueueInfo)
    case count(UInt32)
}

enum Settlement: Sendable {
    case ack(multiple: Bool)
    case nack(multiple: Bool, requeue: Bool)
    case reject(requeue: Bool)

    var multiple: Bool {
        switch self {
        case .ack(let multiple), .nack(let multiple, _): multiple
        case .reject: false
        }
    }
}

struct ConsumerSpec: Sendable {
    var queue: String
    var tag: String
    var exclusive: Bool
    var arguments: AMQPTable
    var buffer: DeliveryBuffer
}

/// The outcome of one publish call (one or more messages), completed when every message is confirmed.
///
/// `@unchecked Sendable`: after the publish command is enqueued, `results`, `remaining` and the ack sink
/// are touched only on the connection thread (the only caller of ``resolve(_:_:)``); the completion runs
/// exactly once.
final class PublishBatch: @unchecked Sendable {
    enum Completion {
        case continuation(CheckedContinuation<[AMQPError?], Never>)
        /// Ack (or, if any message failed, nack with requeue) these deliveries once every message is settled,
        /// on the connection thread, then call `onSettled`.
        case ackAfter(AckAfter)
    }

    private var results: [AMQPError?]
    private var remaining: Int
    private let completion: Completion
    /// Set by the engine: where finished ack-after batches are queued for it.
    var sink: AckSink?

    init(count: Int, continuation: CheckedContinuation<[AMQPError?], Never>) {
        self.results = Array(repeating: nil, count: count)
        self.remaining = count
        self.completion = .continuation(continuation)
        if count == 0 { continuation.resume(returning: []) }
    }

    init(count: Int, ackAfter: AckAfter) {
        self.results = Array(repeating: nil, count: count)
        self.remaining = count
        self.completion = .ackAfter(ackAfter)
    }

    var ackAfter: AckAfter? {
        if case .ackAfter(let ack) = completion { return ack }
        return nil
    }

    func resolve(_ index: Int, _ error: AMQPError?) {
        results[index] = error
        remaining -= 1
        guard remaining == 0 else { return }
        switch completion {
        case .continuation(let continuation): continuation.resume(returning: results)
        case .ackAfter(let ack):
            if let sink { sink.finished.append((ack, results)) } else { ack.onSettled?(results) }
        }
    }
}

/// Deliveries to settle once a publish is confirmed: the late ack of the step protocol, done on the
/// connection thread without a round trip through a task.
struct AckAfter: Sendable {
    var channel: UInt16
    var epoch: UInt64
    var tags: [UInt64]
    /// Runs on the connection thread after every publish was confirmed, right before the ack.
    var beforeAck: (@Sendable () -> Void)?
    var onSettled: (@Sendable ([AMQPError?]) -> Void)?
}

/// Ack-after batches whose publishes all settled, waiting for the engine to ack them. Connection thread only.
final class AckSink {
    var finished: [(AckAfter, [AMQPError?])] = []
}

/// The hand-off between tasks and the connection thread: a locked command list plus a self-pipe that wakes
/// the thread out of poll(2). The pipe is written only when the thread may be asleep (one byte per wake).
final class CommandQueue: Sendable {
    struct State {
        var commands: [Command] = []
        var wakePending = false
        /// The connection thread is (about to be) asleep in poll(2): a new command must wake it.
        var sleeping = false
        var closed = false
        var connected = false
        var reconnects = 0
    }

    let state = Mutex(State())
    let readFD: Int32
    let writeFD: Int32

    init() throws {
        var fds: [Int32] = [0, 0]
        guard baton_nonblocking_pipe(&fds) == 0 else {
            throw AMQPError(.connectionFailed, operation: "create wake-up pipe", fix: "the process is out of file descriptors (ulimit -n)")
        }
        readFD = fds[0]
        writeFD = fds[1]
    }

    /// Enqueues `command`, or fails it with `.closed` when the connection is closed.
    func submit(_ command: Command) { submit(contentsOf: [command]) }

    /// Queues several commands at once: the connection thread takes them in one pass.
    func submit(contentsOf commands: [Command]) {
        guard !commands.isEmpty else { return }
        let (accepted, wake) = state.withLock { state -> (Bool, Bool) in
            guard !state.closed else { return (false, false) }
            state.commands.append(contentsOf: commands)
            if state.sleeping && !state.wakePending {
                state.wakePending = true
                return (true, true)
            }
            return (true, false)
        }
        if wake {
            // Outside the lock: a syscall under it would make every submitter wait for it. The descriptor
            // stays open until the thread has exited, which happens only after `closed` is set and
            // `closeFDs()` runs, and a closed queue never asks for a wake-up.
            var byte: UInt8 = 1
            _ = write(writeFD, &byte, 1)
        }
        if !accepted {
            for command in commands {
                command.fail(AMQPError(.closed, operation: "submit", fix: "the connection was closed; open a new one"))
            }
        }
    }

    func takeAll() -> [Command] {
        state.withLock { state in
            let commands = state.commands
            state.commands.removeAll(keepingCapacity: true)
            return commands
        }
    }

    var hasCommands: Bool { state.withLock { !$0.commands.isEmpty } }

    /// Marks the thread asleep unless commands are waiting; returns whether it may sleep.
    func prepareToSleep() -> Bool {
        state.withLock { state in
            guard state.commands.isEmpty else { return false }
            state.sleeping = true
            return true
        }
    }

    /// Marks the thread awake again and empties the wake-up pipe if it was written.
    func wokeUp(pipeReadable: Bool) {
        if pipeReadable { drainPipe() }
        state.withLock { state in
            state.sleeping = false
            if pipeReadable { state.wakePending = false }
        }
    }

    func drainPipe() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(readFD, &buffer, 64) > 0 {}
    }

    /// Marks the queue closed and returns the commands that will never run.
    func closeAndTakeRemaining() -> [Command] {
        state.withLock { state in
            state.closed = true
            state.connected = false
            let commands = state.commands
            state.commands = []
            return commands
        }
    }

    func closeFDs() {
        close(readFD)
        close(writeFD)
    }
}
