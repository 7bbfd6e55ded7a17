import Dispatch
import Synchronization

/// The hand-off between async callers and a connection's thread: a FIFO of requests behind a `Mutex`,
/// and a semaphore that wakes the thread when work arrives or the connection closes.
final class RequestQueue: Sendable {
    /// One caller's commands and the continuation that receives their replies, in order.
    struct Request: Sendable {
        let id: UInt64
        let commands: [RedisCommand]
        /// nil for a detached request (see ``RedisConnection/sendDetached(_:)``): nobody waits for its replies.
        let continuation: CheckedContinuation<[RedisReply], any Error>?
    }

    private struct State: ~Copyable {
        var requests: [Request] = []
        var queuedCommands = 0
        var nextID: UInt64 = 0
        var closed = false
        var threadWaiting = false
        var exited = false
        /// Jobs of tasks that prefer this connection's thread as their executor.
        var jobs: [UnownedJob] = []
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)
    private let maximumQueuedCommands: Int

    init(maximumQueuedCommands: Int) {
        self.maximumQueuedCommands = max(1, maximumQueuedCommands)
    }

    /// A fresh request id, for ``cancel(_:)``.
    func makeID() -> UInt64 {
        state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
    }

    /// Queues a request; returns the error to fail it with instead when the queue cannot take it.
    ///
    /// Must be called from the caller's task: it checks that task's cancellation under the lock, which
    /// closes the race with ``cancel(_:)``.
    func enqueue(_ request: Request, rejection: (_ closed: Bool) -> RedisError) -> (any Error)? {
        let (error, signal): ((any Error)?, Bool) = state.withLock { state in
            if state.closed { return (rejection(true), false) }
            if Task.isCancelled { return (CancellationError(), false) }
            if state.queuedCommands > 0, state.queuedCommands + request.commands.count > maximumQueuedCommands {
                return (rejection(false), false)
            }
            state.requests.append(request)
            state.queuedCommands += request.commands.count
            let signal = state.threadWaiting
            state.threadWaiting = false
            return (nil, signal)
        }
        if signal { wakeup.signal() }
        return error
    }

    /// Removes a request that the thread has not taken yet and fails it with `CancellationError`.
    func cancel(_ id: UInt64) {
        let removed: Request? = state.withLock { state in
            guard let index = state.requests.firstIndex(where: { $0.id == id }) else { return nil }
            let request = state.requests.remove(at: index)
            state.queuedCommands -= request.commands.count
            return request
        }
        removed?.continuation?.resume(throwing: CancellationError())
    }

    /// Blocks the connection thread until requests are queued; returns all of them, or nil once the
    /// queue is closed.
    func takeAll() -> (jobs: [UnownedJob], requests: [Request])? {
        while true {
            let batch: (jobs: [UnownedJob], requests: [Request])?? = state.withLock { state in
                if !state.requests.isEmpty || !state.jobs.isEmpty {
                    let batch = (state.jobs, state.requests)
                    state.jobs = []
                    state.requests = []
                    state.queuedCommands = 0
                    return .some(batch)
                }
                if state.closed { return .some(nil) }
                state.threadWaiting = true
                return .none
            }
            if let batch { return batch }
            wakeup.wait()
        }
    }

    /// Blocks the connection thread until `deadline` or until the queue closes; returns false if it closed.
    func sleep(until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            if isClosed { return false }
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return true }
            let (seconds, attoseconds) = remaining.components
            let nanoseconds = Int(clamping: seconds) &* 1_000_000_000 &+ Int(attoseconds / 1_000_000_000)
            _ = wakeup.wait(timeout: .now() + .nanoseconds(nanoseconds))
        }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Closes the queue: later ``enqueue(_:rejection:)`` calls fail, the thread exits after its current
    /// batch. Returns the requests that were still queued, for the caller to fail.
    func close() -> [Request] {
        let (queued, signal): ([Request], Bool) = state.withLock { state in
            let signal = !state.closed
            state.closed = true
            state.threadWaiting = false
            let queued = state.requests
            state.requests = []
            state.queuedCommands = 0
            return (queued, signal)
        }
        if signal { wakeup.signal() }
        return queued
    }

    /// Queues a task job to run on the connection thread; false once the thread has exited (then the
    /// caller runs it elsewhere).
    func enqueueJob(_ job: UnownedJob) -> Bool {
        let (accepted, signal): (Bool, Bool) = state.withLock { state in
            guard !state.exited else { return (false, false) }
            state.jobs.append(job)
            let signal = state.threadWaiting
            state.threadWaiting = false
            return (true, signal)
        }
        if signal { wakeup.signal() }
        return accepted
    }

    /// Called by the thread as its last act, after it freed the connection. Returns jobs that arrived
    /// meanwhile, for the thread to hand to the global executor.
    func markExited() -> [UnownedJob] {
        let (waiters, jobs) = state.withLock { state in
            state.exited = true
            let waiters = state.exitWaiters
            state.exitWaiters = []
            let jobs = state.jobs
            state.jobs = []
            return (waiters, jobs)
        }
        for waiter in waiters {
            waiter.resume()
        }
        return jobs
    }

    /// Waits until the thread has exited.
    func waitForExit() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let exited = state.withLock { state in
                if !state.exited { state.exitWaiters.append(continuation) }
                return state.exited
            }
            if exited { continuation.resume() }
        }
    }
}
