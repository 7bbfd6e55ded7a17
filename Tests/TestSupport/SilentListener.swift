import Foundation

/// A TCP listener on 127.0.0.1 that accepts nothing and answers nothing: the kernel completes a client's connect
/// from the backlog, and then every read waits.
public struct SilentListener {
    public let fd: Int32
    public let port: Int

    public init() throws {
        (fd, port) = try bindLoopback(listen: true)
    }

    public func close() { _ = Foundation.close(fd) }
}

public struct SocketFailure: Error {}

public func bindLoopback(listen shouldListen: Bool) throws -> (Int32, Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SocketFailure() }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && (!shouldListen || listen(fd, 16) == 0) && getsockname(fd, $0, &length) == 0
        }
    }
    guard bound else {
        close(fd)
        throw SocketFailure()
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}
