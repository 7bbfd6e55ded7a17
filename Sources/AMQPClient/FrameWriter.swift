import CRabbitMQ
import Glibc

/// The frames the connection thread writes itself — publishes, acks, nacks and rejects — encoded back to back in
/// one buffer and sent with as few `send(2)` calls as the socket takes.
///
/// rabbitmq-c's `amqp_basic_publish` sends each frame of a message (method, content header, body) with a `send` of
/// its own, and `amqp_basic_ack` one more: ~6 system calls per step hop in `baton bench stepchain`, ~14 % of a
/// worker's CPU in the kernel (fifteenth session, perf). The frames here are the ones rabbitmq-c writes: its own
/// `amqp_encode_method` and `amqp_encode_properties` encode the payloads, and ``FrameWriterTests`` decodes the
/// buffer back with its `amqp_handle_input`.
///
/// Order: the buffer must reach the socket before rabbitmq-c writes anything of its own on the same connection
/// (a synchronous call, a close-ok, the frames read in between): ``ConnectionEngine`` flushes it first, always.
struct FrameWriter {
    private(set) var bytes: [UInt8] = []

    var isEmpty: Bool { bytes.isEmpty }

    /// Forgets what is buffered (the connection was dropped; its publishes and acks are failed or redelivered).
    mutating func reset() {
        bytes.removeAll(keepingCapacity: bytes.capacity <= 1 << 20)
    }

    /// Appends `basic.publish`, its content header and its body frames (at most `frameMax` bytes each).
    /// False when the method or the properties cannot be encoded (nothing of the message is left in the buffer).
    mutating func publish(
        channel: UInt16, exchange: amqp_bytes_t, routingKey: amqp_bytes_t, mandatory: Bool,
        properties: inout amqp_basic_properties_t, body: UnsafeRawBufferPointer, frameMax: Int
    ) -> Bool {
        let start = bytes.count
        var method = amqp_basic_publish_t(
            ticket: 0, exchange: exchange, routing_key: routingKey, mandatory: mandatory ? 1 : 0, immediate: 0)
        guard self.method(channel: channel, AMQP_BASIC_PUBLISH_METHOD, &method, room: exchange.len + routingKey.len + 16) else {
            return false
        }
        // The content header: class, weight 0, body size, then the property flags and list.
        let header = beginFrame(UInt8(AMQP_FRAME_HEADER), channel: channel)
        appendBigEndian(UInt16(AMQP_BASIC_CLASS))
        appendBigEndian(UInt16(0))
        appendBigEndian(UInt64(body.count))
        var encoded = false
        // Most properties fit in 1 KB; a large headers table is retried at the frame's limit.
        for room in [1024, max(frameMax - 20, 1024)] {
            let written = encode(room: room) { buffer in
                withUnsafeMutablePointer(to: &properties) { amqp_encode_properties(UInt16(AMQP_BASIC_CLASS), $0, buffer) }
            }
            if written { encoded = true; break }
        }
        guard encoded else {
            bytes.removeSubrange(start...)
            return false
        }
        endFrame(header)
        // Body frames: a frame's payload is at most frame_max less its 8 bytes of header and end marker.
        let chunk = max(frameMax - 8, 1)
        var offset = 0
        while offset < body.count {
            let length = min(chunk, body.count - offset)
            let frame = beginFrame(UInt8(AMQP_FRAME_BODY), channel: channel)
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: body[offset..<(offset + length)]))
            endFrame(frame)
            offset += length
        }
        return true
    }

    /// Appends `basic.ack`.
    mutating func ack(channel: UInt16, tag: UInt64, multiple: Bool) {
        var method = amqp_basic_ack_t(delivery_tag: tag, multiple: multiple ? 1 : 0)
        _ = self.method(channel: channel, AMQP_BASIC_ACK_METHOD, &method, room: 16)
    }

    /// Appends `basic.nack`.
    mutating func nack(channel: UInt16, tag: UInt64, multiple: Bool, requeue: Bool) {
        var method = amqp_basic_nack_t(delivery_tag: tag, multiple: multiple ? 1 : 0, requeue: requeue ? 1 : 0)
        _ = self.method(channel: channel, AMQP_BASIC_NACK_METHOD, &method, room: 16)
    }

    /// Appends `basic.reject`.
    mutating func reject(channel: UInt16, tag: UInt64, requeue: Bool) {
        var method = amqp_basic_reject_t(delivery_tag: tag, requeue: requeue ? 1 : 0)
        _ = self.method(channel: channel, AMQP_BASIC_REJECT_METHOD, &method, room: 16)
    }

    /// Appends a method frame: the method number, then its arguments as `amqp_encode_method` writes them.
    private mutating func method<Method>(
        channel: UInt16, _ id: amqp_method_number_t, _ decoded: inout Method, room: Int
    ) -> Bool {
        let start = bytes.count
        let frame = beginFrame(UInt8(AMQP_FRAME_METHOD), channel: channel)
        appendBigEndian(UInt32(id))
        let written = encode(room: room) { buffer in withUnsafeMutablePointer(to: &decoded) { amqp_encode_method(id, $0, buffer) } }
        guard written else {
            bytes.removeSubrange(start...)
            return false
        }
        endFrame(frame)
        return true
    }

    /// Lets `encoder` write at most `room` bytes at the end of the buffer, keeping what it wrote (it returns the
    /// count, or a negative rabbitmq-c status when the room was too small or the data is bad).
    private mutating func encode(room: Int, _ encoder: (amqp_bytes_t) -> Int32) -> Bool {
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: room))
        let written = bytes.withUnsafeMutableBytes { buffer in
            encoder(amqp_bytes_t(len: room, bytes: buffer.baseAddress! + start))
        }
        guard written >= 0, Int(written) <= room else {
            bytes.removeSubrange(start...)
            return false
        }
        bytes.removeLast(room - Int(written))
        return true
    }

    /// Type, channel and a size to fill in; returns where the frame starts.
    private mutating func beginFrame(_ type: UInt8, channel: UInt16) -> Int {
        let start = bytes.count
        bytes.append(type)
        appendBigEndian(channel)
        appendBigEndian(UInt32(0))
        return start
    }

    /// Fills in the size of the frame that starts at `start` and appends the end marker.
    private mutating func endFrame(_ start: Int) {
        let size = UInt32(bytes.count - start - 7)
        bytes[start + 3] = UInt8(truncatingIfNeeded: size >> 24)
        bytes[start + 4] = UInt8(truncatingIfNeeded: size >> 16)
        bytes[start + 5] = UInt8(truncatingIfNeeded: size >> 8)
        bytes[start + 6] = UInt8(truncatingIfNeeded: size)
        bytes.append(UInt8(AMQP_FRAME_END))
    }

    private mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// Why a flush failed.
    enum FlushFailure: Error, Equatable {
        /// `send` failed with this errno (the connection is broken).
        case failed(Int32)
        /// The socket took nothing for this long (the broker stopped reading, or the network is down).
        case stalled(Duration)
    }

    /// Writes the whole buffer to the non-blocking socket `fd` and empties it. While the socket is full it waits for
    /// room; when none comes for `stallLimit` (nil: wait as long as it takes) it gives up.
    mutating func flush(to fd: Int32, stallLimit: Duration?) -> FlushFailure? {
        guard !bytes.isEmpty else { return nil }
        defer { reset() }
        var sent = 0
        var stalledSince: ContinuousClock.Instant?
        return bytes.withUnsafeBytes { buffer -> FlushFailure? in
            while sent < buffer.count {
                let count = send(fd, buffer.baseAddress! + sent, buffer.count - sent, Int32(MSG_NOSIGNAL))
                if count > 0 {
                    sent += count
                    stalledSince = nil
                    continue
                }
                let error = errno
                if count < 0 && error == EINTR { continue }
                guard count < 0 && (error == EAGAIN || error == EWOULDBLOCK) else { return .failed(count == 0 ? EPIPE : error) }
                let since = stalledSince ?? .now
                stalledSince = since
                if let stallLimit, since.duration(to: .now) >= stallLimit { return .stalled(stallLimit) }
                var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&descriptor, 1, 1000)
            }
            return nil
        }
    }
}
