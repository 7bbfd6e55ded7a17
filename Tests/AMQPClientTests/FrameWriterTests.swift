import CRabbitMQ
import Glibc
import Testing

@testable import AMQPClient

/// The frames ``FrameWriter`` buffers are the ones rabbitmq-c would send: each test decodes the buffer with
/// rabbitmq-c's own reader (`amqp_handle_input` on a fresh connection state, which takes frames of up to 65,536 bytes).
@Suite("AMQP: frames written into one buffer")
struct FrameWriterTests {
    enum Decoded: Equatable {
        case publish(channel: UInt16, exchange: String, routingKey: String, mandatory: Bool)
        case ack(channel: UInt16, tag: UInt64, multiple: Bool)
        case nack(channel: UInt16, tag: UInt64, multiple: Bool, requeue: Bool)
        case reject(channel: UInt16, tag: UInt64, requeue: Bool)
        case header(channel: UInt16, bodySize: UInt64, properties: AMQPProperties)
        case body(channel: UInt16, [UInt8])
    }

    /// Every frame in `bytes`, decoded; fails the test when the bytes are not whole, valid frames.
    static func decode(_ bytes: [UInt8]) throws -> [Decoded] {
        let state = try #require(amqp_new_connection())
        defer { amqp_destroy_connection(state) }
        var frames: [Decoded] = []
        var offset = 0
        try bytes.withUnsafeBytes { buffer in
            while offset < buffer.count {
                var frame = amqp_frame_t()
                let input = amqp_bytes_t(len: buffer.count - offset, bytes: UnsafeMutableRawPointer(mutating: buffer.baseAddress! + offset))
                let consumed = amqp_handle_input(state, input, &frame)
                try #require(consumed > 0, "rabbitmq-c refused the bytes at \(offset): status \(consumed)")
                offset += Int(consumed)
                guard frame.frame_type != 0 else { continue }
                frames.append(try convert(frame))
            }
        }
        return frames
    }

    static func convert(_ frame: amqp_frame_t) throws -> Decoded {
        let channel = frame.channel
        switch Int32(frame.frame_type) {
        case AMQP_FRAME_METHOD:
            let method = frame.payload.method
            switch method.id {
            case AMQP_BASIC_PUBLISH_METHOD:
                let m = method.decoded.assumingMemoryBound(to: amqp_basic_publish_t.self).pointee
                return .publish(
                    channel: channel, exchange: CDecode.string(m.exchange), routingKey: CDecode.string(m.routing_key),
                    mandatory: m.mandatory != 0)
            case AMQP_BASIC_ACK_METHOD:
                let m = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
                return .ack(channel: channel, tag: m.delivery_tag, multiple: m.multiple != 0)
            case AMQP_BASIC_NACK_METHOD:
                let m = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
                return .nack(channel: channel, tag: m.delivery_tag, multiple: m.multiple != 0, requeue: m.requeue != 0)
            case AMQP_BASIC_REJECT_METHOD:
                let m = method.decoded.assumingMemoryBound(to: amqp_basic_reject_t.self).pointee
                return .reject(channel: channel, tag: m.delivery_tag, requeue: m.requeue != 0)
            default:
                throw DecodeFailure(what: "method \(method.id)")
            }
        case AMQP_FRAME_HEADER:
            let header = frame.payload.properties
            let properties = try #require(header.decoded).assumingMemoryBound(to: amqp_basic_properties_t.self).pointee
            #expect(header.class_id == UInt16(AMQP_BASIC_CLASS))
            return .header(channel: channel, bodySize: header.body_size, properties: CDecode.properties(properties))
        case AMQP_FRAME_BODY:
            let fragment = frame.payload.body_fragment
            return .body(channel: channel, Array(UnsafeRawBufferPointer(start: fragment.bytes, count: fragment.len)))
        default:
            throw DecodeFailure(what: "frame type \(frame.frame_type)")
        }
    }

    struct DecodeFailure: Error {
        let what: String
    }

    /// Buffers one publish the way the engine does.
    @discardableResult
    static func publish(
        _ writer: inout FrameWriter, channel: UInt16 = 3, exchange: String = "baton.steps", routingKey: String = "baton.steps.default",
        mandatory: Bool = true, properties: AMQPProperties, body: [UInt8], frameMax: Int = 131_072
    ) -> Bool {
        let arena = CArena()
        var c = arena.properties(properties)
        let encoded = body.withUnsafeBytes { bytes in
            writer.publish(
                channel: channel, exchange: arena.bytes(exchange), routingKey: arena.bytes(routingKey), mandatory: mandatory,
                properties: &c, body: bytes, frameMax: frameMax)
        }
        withExtendedLifetime(arena) {}
        return encoded
    }

    static let rich = AMQPProperties(
        contentType: "application/json", headers: ["x-baton-task": .string("t-1"), "n": .int64(-7), "ok": .bool(true), "d": .double(0.5)],
        deliveryMode: 2, correlationID: "c-9", replyTo: "amq.rabbitmq.reply-to", messageID: "m-1", timestamp: 1_795_394_015,
        type: "step", appID: "baton")

    @Test func aPublishIsItsMethodHeaderAndBodyFrames() throws {
        var writer = FrameWriter()
        let body = Array(#"{"v":1,"task":"t-1"}"#.utf8)
        #expect(Self.publish(&writer, properties: Self.rich, body: body))
        #expect(
            try Self.decode(writer.bytes) == [
                .publish(channel: 3, exchange: "baton.steps", routingKey: "baton.steps.default", mandatory: true),
                .header(channel: 3, bodySize: UInt64(body.count), properties: Self.rich),
                .body(channel: 3, body),
            ])
    }

    @Test func anEmptyBodyHasNoBodyFrameAndAnEmptyExchangeIsTheDefaultOne() throws {
        var writer = FrameWriter()
        #expect(Self.publish(&writer, channel: 1, exchange: "", routingKey: "q", mandatory: false, properties: AMQPProperties(), body: []))
        #expect(
            try Self.decode(writer.bytes) == [
                .publish(channel: 1, exchange: "", routingKey: "q", mandatory: false),
                .header(channel: 1, bodySize: 0, properties: AMQPProperties()),
            ])
    }

    @Test func aBodyLargerThanAFrameIsSplitAtFrameMax() throws {
        var writer = FrameWriter()
        let body = (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(Self.publish(&writer, properties: .persistentJSON, body: body, frameMax: 65_536))
        let frames = try Self.decode(writer.bytes)
        #expect(frames.count == 5)
        var joined: [UInt8] = []
        var sizes: [Int] = []
        for case .body(_, let fragment) in frames {
            joined += fragment
            sizes.append(fragment.count)
        }
        // A frame's payload is frame_max less its 7-byte header and its end marker.
        #expect(sizes == [65_528, 65_528, 150_000 - 2 * 65_528])
        #expect(joined == body)
    }

    @Test func settlementsFollowPublishesInOrder() throws {
        var writer = FrameWriter()
        writer.ack(channel: 2, tag: 41, multiple: true)
        Self.publish(&writer, channel: 2, properties: .persistentJSON, body: [1, 2, 3])
        writer.nack(channel: 2, tag: 42, multiple: false, requeue: true)
        writer.reject(channel: 5, tag: UInt64.max, requeue: false)
        #expect(
            try Self.decode(writer.bytes) == [
                .ack(channel: 2, tag: 41, multiple: true),
                .publish(channel: 2, exchange: "baton.steps", routingKey: "baton.steps.default", mandatory: true),
                .header(channel: 2, bodySize: 3, properties: .persistentJSON),
                .body(channel: 2, [1, 2, 3]),
                .nack(channel: 2, tag: 42, multiple: false, requeue: true),
                .reject(channel: 5, tag: UInt64.max, requeue: false),
            ])
    }

    @Test func propertiesTooLargeForAFrameLeaveNothingOfTheMessage() throws {
        var writer = FrameWriter()
        writer.ack(channel: 1, tag: 1, multiple: false)
        let before = writer.bytes
        let huge = AMQPProperties(headers: ["big": .string(String(repeating: "x", count: 100_000))])
        #expect(!Self.publish(&writer, properties: huge, body: [1], frameMax: 65_536))
        #expect(writer.bytes == before)
        // A large table that fits the frame is encoded on the second try.
        let large = AMQPProperties(headers: ["big": .string(String(repeating: "y", count: 5_000))])
        #expect(Self.publish(&writer, properties: large, body: [2], frameMax: 65_536))
        #expect(try Self.decode(writer.bytes).count == 4)
    }

    /// A connected, non-blocking socket pair: `[0]` is the writer's end.
    static func socketPair() throws -> [Int32] {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        return fds
    }

    @Test func flushSendsEverythingAndEmptiesTheBuffer() throws {
        let fds = try Self.socketPair()
        defer { fds.forEach { close($0) } }
        var writer = FrameWriter()
        Self.publish(&writer, properties: Self.rich, body: Array(repeating: 7, count: 1000))
        writer.ack(channel: 3, tag: 9, multiple: false)
        let expected = writer.bytes
        #expect(writer.flush(to: fds[0], stallLimit: .seconds(5)) == nil)
        #expect(writer.isEmpty)
        var received = [UInt8](repeating: 0, count: expected.count + 16)
        let count = read(fds[1], &received, received.count)
        #expect(Array(received.prefix(max(count, 0))) == expected)
    }

    @Test func aPeerThatReadsNothingStallsTheFlushAndAClosedOneFailsIt() throws {
        let fds = try Self.socketPair()
        defer { fds.forEach { close($0) } }
        var writer = FrameWriter()
        // More than the socket pair buffers: the peer never reads, so the flush stalls and gives up.
        Self.publish(&writer, properties: .persistentJSON, body: Array(repeating: 1, count: 8 << 20), frameMax: 131_072)
        #expect(writer.flush(to: fds[0], stallLimit: .milliseconds(200)) == .stalled(.milliseconds(200)))
        #expect(writer.isEmpty)
        // A closed peer, on a socket pair of its own: the stalled one's full buffer is freed by the kernel on the peer's
        // close, but not always before the next write (a loaded box saw that write wait out its 5 s), which is not
        // what this checks.
        let closed = try Self.socketPair()
        defer { close(closed[0]) }
        close(closed[1])
        writer.ack(channel: 1, tag: 1, multiple: false)
        #expect(writer.flush(to: closed[0], stallLimit: .seconds(5)) == .failed(EPIPE))
    }
}
