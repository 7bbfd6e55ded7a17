import Synchronization

/// Deliveries read for one consumer and not yet taken. The consumer takes **everything buffered** at once,
/// so a slow round of processing is followed by one large batch rather than many small ones (the batching
/// that lets a worker pipeline its Redis calls).
final class DeliveryBuffer: Sendable {
    private struct State {
        var items: [AMQPDelivery] = []
        var waiter: CheckedContinuation<[AMQPDelivery]?, Never>?
        var finished = false
    }
    private let state = Mutex(State())

    /// Called on the connection thread with the deliveries of one read cycle.
    func append(_ deliveries: [AMQPDelivery]) {
        let waiter = state.withLock { state -> (CheckedContinuation<[AMQPDelivery]?, Never>, [AMQPDelivery])? in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                let items = state.items + deliveries
                state.items = []
                return (waiter, items)
            }
            state.items.append(contentsOf: deliveries)
            return nil
        }
        if let (continuation, items) = waiter { continuation.resume(returning: items) }
    }

    /// Ends the stream (after what is buffered has been taken).
    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<[AMQPDelivery]?, Never>? in
            state.finished = true
            let waiter = state.waiter
            state.waiter = nil
            return waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Everything buffered, waiting for at least one delivery; nil once finished and drained (or cancelled).
    func next() async -> [AMQPDelivery]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[AMQPDelivery]?, Never>) in
                let ready = state.withLock { state -> [AMQPDelivery]?? in
                    if !state.items.isEmpty {
                        let items = state.items
                        state.items = []
                        return .some(items)
                    }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = continuation
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<[AMQPDelivery]?, Never>? in
                let waiter = state.waiter
                state.waiter = nil
                return waiter
            }
            waiter?.resume(returning: nil)
        }
    }
}

/// A consumer's deliveries, each element everything that was buffered when it was asked for.
public struct AMQPDeliveryBatches: AsyncSequence, Sendable {
    public typealias Element = [AMQPDelivery]
    let buffer: DeliveryBuffer

    public struct AsyncIterator: AsyncIteratorProtocol {
        let buffer: DeliveryBuffer
        public mutating func next() async -> [AMQPDelivery]? { await buffer.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(buffer: buffer) }
}
