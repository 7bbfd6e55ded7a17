import Foundation

/// A small HTTP/1.1 client over a POSIX socket for the HTTP API tests: one request per connection
/// (`Connection: close`), chunked bodies decoded, and server-sent events read as they arrive. Every blocking
/// call runs on a thread of its own, never on Swift's cooperative pool.
struct HTTPTestClient: Sendable {
    let port: Int
    /// How long a read may wait for a byte (a server answering from `rabbitmqctl` on a loaded machine needs more).
    /// Generous: CI runs the whole suite at once on two cores; a slow answer is not what these tests check.
    var receiveTimeoutSeconds = 90

    struct Reply: Sendable {
        var status: Int
        /// Header names lower-cased.
        var headers: [String: String]
        var body: String

        /// The body as a JSON object (a recorded failure and `[:]` when it is not one).
        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
        }
        var items: [[String: Any]] { json["items"] as? [[String: Any]] ?? [] }
    }

    struct TestError: Error, CustomStringConvertible {
        var description: String
    }

    func request(
        _ method: String, _ path: String, token: String? = nil, headers: [String: String] = [:], body: String? = nil
    ) async throws -> Reply {
        let (port, timeout) = (self.port, receiveTimeoutSeconds)
        return try await Self.offPool {
            let connection = try Connection(port: port, timeoutSeconds: timeout)
            defer { connection.close() }
            try connection.send(Self.head(method, path, token: token, headers: headers, body: body))
            var raw: [UInt8] = []
            while let chunk = try connection.receive() { raw += chunk }
            guard let split = Self.headEnd(raw) else { throw TestError(description: "no HTTP head in \(raw.count) bytes") }
            let (status, fields) = try Self.parseHead(Array(raw[..<split]))
            var payload = Array(raw[(split + 4)...])
            if fields["transfer-encoding"]?.contains("chunked") == true { payload = Self.dechunk(payload).body }
            return Reply(status: status, headers: fields, body: String(decoding: payload, as: UTF8.self))
        }
    }

    static func head(_ method: String, _ path: String, token: String?, headers: [String: String], body: String?) -> [UInt8] {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let token { text += "Authorization: Bearer \(token)\r\n" }
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        let bytes = Array((body ?? "").utf8)
        if body != nil { text += "Content-Type: application/json\r\n" }
        text += "Content-Length: \(bytes.count)\r\n\r\n"
        return Array(text.utf8) + bytes
    }

    static func headEnd(_ raw: [UInt8]) -> Int? {
        guard raw.count >= 4 else { return nil }
        for index in 0...(raw.count - 4) where raw[index] == 13 && raw[index + 1] == 10 && raw[index + 2] == 13 && raw[index + 3] == 10 {
            return index
        }
        return nil
    }

    static func parseHead(_ bytes: [UInt8]) throws -> (Int, [String: String]) {
        let lines = String(decoding: bytes, as: UTF8.self).components(separatedBy: "\r\n")
        let parts = lines[0].split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw TestError(description: "bad status line \(lines[0])") }
        var fields: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (status, fields)
    }

    /// Decodes the complete chunks of `raw`; returns the body so far and how many bytes of `raw` were used.
    static func dechunk(_ raw: [UInt8]) -> (body: [UInt8], used: Int) {
        var body: [UInt8] = []
        var position = 0
        while true {
            guard let lineEnd = (position..<max(position, raw.count - 1)).first(where: { raw[$0] == 13 && raw[$0 + 1] == 10 }),
                let size = Int(String(decoding: raw[position..<lineEnd], as: UTF8.self).split(separator: ";")[0], radix: 16)
            else { return (body, position) }
            let start = lineEnd + 2
            guard size > 0 else { return (body, raw.count) }
            guard raw.count >= start + size + 2 else { return (body, position) }
            body += raw[start..<(start + size)]
            position = start + size + 2
        }
    }

    /// One server-sent event.
    struct Event: Sendable, Equatable {
        var id: String?
        var type: String?
        var data: String
    }

    /// An open `text/event-stream` response.
    final class EventStream: @unchecked Sendable {
        // Used by one test at a time, one call after another: nothing runs concurrently.
        let connection: Connection
        let status: Int
        let headers: [String: String]
        var pending: [UInt8] = []
        var text = ""

        init(connection: Connection, status: Int, headers: [String: String], rest: [UInt8]) {
            self.connection = connection
            self.status = status
            self.headers = headers
            self.pending = rest
        }

        /// Reads until `count` events (with data) arrived, or the server closes, or 20 s pass without a byte.
        func next(_ count: Int) async throws -> [Event] {
            try await HTTPTestClient.offPool { try self.read(count) }
        }

        func read(_ count: Int) throws -> [Event] {
            var events: [Event] = []
            while true {
                let (body, used) = HTTPTestClient.dechunk(pending)
                pending.removeFirst(used)
                text += String(decoding: body, as: UTF8.self)
                while events.count < count, let end = text.range(of: "\n\n") {
                    let block = text[..<end.lowerBound]
                    text.removeSubrange(..<end.upperBound)
                    var event = Event(id: nil, type: nil, data: "")
                    var hasData = false
                    for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                        if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
                        if line.hasPrefix("event: ") { event.type = String(line.dropFirst(7)) }
                        if line.hasPrefix("data: ") {
                            event.data += String(line.dropFirst(6))
                            hasData = true
                        }
                    }
                    if hasData { events.append(event) }
                }
                if events.count >= count { return events }
                guard let chunk = try connection.receive() else { return events }
                pending += chunk
            }
        }

        func close() { connection.close() }
    }

    /// Opens `path` with `Accept: text/event-stream`.
    func events(_ path: String, token: String?, lastEventID: String? = nil) async throws -> EventStream {
        let (port, timeout) = (self.port, receiveTimeoutSeconds)
        return try await Self.offPool {
            let connection = try Connection(port: port, timeoutSeconds: timeout)
            var headers = ["Accept": "text/event-stream"]
            if let lastEventID { headers["Last-Event-ID"] = lastEventID }
            try connection.send(Self.head("GET", path, token: token, headers: headers, body: nil))
            var raw: [UInt8] = []
            while Self.headEnd(raw) == nil {
                guard let chunk = try connection.receive() else { throw TestError(description: "closed before the head") }
                raw += chunk
            }
            let split = Self.headEnd(raw)!
            let (status, fields) = try Self.parseHead(Array(raw[..<split]))
            return EventStream(connection: connection, status: status, headers: fields, rest: Array(raw[(split + 4)...]))
        }
    }

    /// A blocking TCP connection to 127.0.0.1 with a 20 s receive timeout.
    final class Connection: @unchecked Sendable {
        // The descriptor is used by one thread at a time (see HTTPTestClient).
        let fd: Int32

        init(port: Int, timeoutSeconds: Int = 20) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw TestError(description: "socket() failed: \(errno)") }
            var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard result == 0 else {
                Glibc.close(fd)
                throw TestError(description: "connect to 127.0.0.1:\(port) failed: \(errno)")
            }
        }

        func send(_ bytes: [UInt8]) throws {
            var sent = 0
            while sent < bytes.count {
                let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard n > 0 else { throw TestError(description: "send failed: \(errno)") }
                sent += n
            }
        }

        /// The next bytes, nil at the end of the stream; throws on a timeout.
        func receive() throws -> [UInt8]? {
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return nil }
            guard n > 0 else { throw TestError(description: "receive failed or timed out: errno \(errno)") }
            return Array(buffer[..<n])
        }

        func close() { shutdown(fd, Int32(SHUT_RDWR)) }

        deinit { Glibc.close(fd) }
    }

    /// Runs blocking `work` on a new thread.
    static func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try work() }) }.start()
        }
    }
}
