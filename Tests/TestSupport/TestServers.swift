import Baton
import Foundation

/// How integration tests find the real servers that `scripts/test` starts.
///
/// With `BATON_REQUIRE_SERVERS=1` (CI sets it) a missing server is a test failure; without it, tests that
/// need a server are skipped (use `.enabled(if: TestServers.available)`).
public enum TestServers {
    public static var amqpURL: String { Endpoints.amqpURL() }
    public static var redisURL: String { Endpoints.redisURL() }

    public static var required: Bool { ProcessInfo.processInfo.environment["BATON_REQUIRE_SERVERS"] == "1" }

    /// True when both servers answer a TCP connect, or when they are required (then the test runs and
    /// fails loudly if they are not there).
    public static let available: Bool = {
        if required { return true }
        return portOpen(url: amqpURL, defaultPort: 5672) && portOpen(url: redisURL, defaultPort: 6379)
    }()

    /// A name no other test or run uses: for queues, exchanges and key prefixes.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix).\(UInt64.random(in: 0..<UInt64.max).hexString)"
    }

    static func portOpen(url: String, defaultPort: Int) -> Bool {
        guard let components = URLComponents(string: url), let host = components.host else { return false }
        let address = host == "localhost" ? "127.0.0.1" : host
        return TestPorts.withSocket(host: address, port: components.port ?? defaultPort) { fd, address, length in
            connect(fd, address, length)
        } == true
    }
}

extension UInt64 {
    var hexString: String { String(self, radix: 16) }
}
