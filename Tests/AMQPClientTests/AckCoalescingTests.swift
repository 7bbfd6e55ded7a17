import Foundation
import Synchronization
import TestSupport
import Testing

@testable import AMQPClient

@Suite("AMQP: coalesced late acks")
struct AckCoalescingTests {
    @Test("tags below the lowest unsettled one become one multiple ack; the rest go one by one")
    func frames() {
        let frames = ConnectionEngine.coalescedAcks([9, 3, 4, 5, 12, 2], lowestUnsettled: 7)
        #expect(frames.map(\.tag) == [5, 9, 12])
        #expect(frames.map(\.multiple) == [true, false, false])
        // A single tag below the cut needs no multiple flag; nothing unsettled left: everything in one frame.
        #expect(ConnectionEngine.coalescedAcks([3, 8], lowestUnsettled: 5).map(\.multiple) == [false, false])
        let all = ConnectionEngine.coalescedAcks([6, 1, 2], lowestUnsettled: nil)
        #expect(all.count == 1 && all[0].tag == 6 && all[0].multiple)
        // The lowest tag still held: nothing can be coalesced.
        #expect(ConnectionEngine.coalescedAcks([2, 3], lowestUnsettled: 1).map(\.multiple) == [false, false])
    }
}

@Suite("AMQP: coalesced late acks against a real broker", .enabled(if: TestServers.available), .serialized)
struct AckCoalescingIntegrationTests {
    /// 40 deliveries; 38 are acked after their publishes (coalesced), two are held back. The held ones must stay
    /// unacked: one is then acked on its own (a multiple ack that had covered it would make the broker close the
    /// channel, "unknown delivery tag"), the other is requeued when the connection closes.
    @Test(.timeLimit(.minutes(1)))
    func heldDeliveriesAreNotCoveredByAMultipleAck() async throws {
        try await AMQPConnection.withConnection(try AMQPIntegrationTests.configuration()) { admin in
            let control = try await admin.openChannel(confirms: true)
            try await AMQPIntegrationTests.withQueue(control) { source in
                try await AMQPIntegrationTests.withQueue(control) { target in
                    let bodies = (0..<40).map { AMQPMessage(exchange: "", routingKey: source, body: Array("m\($0)".utf8)) }
                    #expect(try await control.publish(bodies).allSatisfy { $0 == nil })

                    let connection = try await AMQPConnection.connect(try AMQPIntegrationTests.configuration())
                    let channel = try await connection.openChannel(confirms: true, prefetch: 100)
                    let consumer = try await channel.consume(queue: source)
                    var deliveries: [AMQPDelivery] = []
                    for await delivery in consumer.deliveries {
                        deliveries.append(delivery)
                        if deliveries.count == 40 { break }
                    }
                    let held = [deliveries[30], deliveries[35]]
                    let (settled, settledSink) = AsyncStream.makeStream(of: Bool.self)
                    let hops = deliveries.enumerated().filter { ![30, 35].contains($0.offset) }.map { index, delivery in
                        AMQPChannel.HopSettlement(
                            messages: [AMQPMessage(exchange: "", routingKey: target, body: Array("n\(index)".utf8))], thenAck: [delivery],
                            onSettled: { results in settledSink.yield(results.allSatisfy { $0 == nil }) })
                    }
                    channel.publish(each: hops)
                    var confirmed = 0
                    for await ok in settled {
                        #expect(ok)
                        confirmed += 1
                        if confirmed == hops.count { break }
                    }
                    try await channel.ack(held[1])
                    // The channel survived every ack (no 406): a publish on it is still confirmed.
                    try await channel.publish(AMQPMessage(exchange: "", routingKey: target, body: [1]))
                    await connection.close()
                    let requeued = await eventually { (try? await control.inspectQueue(source).messageCount) == 1 }
                    #expect(requeued, "exactly the one held, never-acked delivery is back in the queue")
                    #expect(try await control.inspectQueue(target).messageCount == 39)
                }
            }
        }
    }
}
