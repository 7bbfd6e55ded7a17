import Foundation
import Synchronization

/// Loopback ports for servers that a test starts itself (a sandboxed RabbitMQ node, a Redis, `baton serve`, a
/// webhook receiver).
///
/// A port that the kernel hands out for `bind(0)` is only free for a moment: it comes from the ephemeral range
/// (32768–60999 on Debian), which every outgoing connection of the test process draws from too, and another test's
/// `bind(0)` may get it again. A RabbitMQ node takes seconds to boot before it binds its distribution and AMQP
/// ports; when one of them was taken in that window the node halted before it wrote a log line, and the test
/// waited out the start timeout (a CI run on 2026-11-23 failed that way). These ports come from below the
/// ephemeral range, where the kernel never picks one, and no two callers in a process get the same one.
public enum TestPorts {
    /// Below Linux's default ephemeral range; 25673, the shared node's distribution port, is skipped.
    static let range = 20_000..<32_000
    static let reserved: Set<Int> = [25_673]
    static let next = Mutex(Int.random(in: 0..<12_000))

    /// A loopback port that nothing listens on or is bound to now and that no other caller in this process has
    /// been given.
    public static func free() throws -> Int {
        for _ in 0..<range.count {
            let port = next.withLock { offset in
                defer { offset = (offset + 1) % range.count }
                return range.lowerBound + offset
            }
            if !reserved.contains(port), canBind(port) { return port }
        }
        throw TestPortsError(message: "no free loopback port in \(range)")
    }

    /// True when a socket can bind 127.0.0.1:`port` (then closes it).
    static func canBind(_ port: Int) -> Bool {
        withSocket(host: "127.0.0.1", port: port) { fd, address, length in bind(fd, address, length) } == true
    }

    /// Runs `call` (a `bind` or a `connect`) on a new TCP socket with the IPv4 address `host`:`port`, then closes
    /// the socket. True when `call` returned 0; nil when `host` is not an IPv4 address or no socket was made.
    static func withSocket(
        host: String, port: Int, _ call: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32
    ) -> Bool? {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { return nil }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

public struct TestPortsError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
