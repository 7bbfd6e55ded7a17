/// A parsed `redis://` URL: where a Redis server is and how to log in to it.
///
/// Accepted forms (user name, password, port and path are optional; the user info is percent-decoded):
/// - `redis://host` and `redis://host:port` (port 6379 and database 0 by default)
/// - `redis://:password@host:port/db` (`AUTH password`, for `requirepass`)
/// - `redis://user:password@host:port/db` (`AUTH user password`, for Redis 6 ACL users)
/// - `redis://[::1]:6379/0` (IPv6 literals in brackets)
///
/// ``redacted`` renders the URL with the password replaced by `***`, for logs and error messages.
public struct RedisURL: Sendable, Hashable, CustomStringConvertible {
    /// The default Redis port, used when the URL names none.
    public static let defaultPort = 6379

    /// The host name or IP address (an IPv6 address without brackets).
    public var host: String
    /// The TCP port.
    public var port: Int
    /// The database index selected with `SELECT` after every connect.
    public var database: Int
    /// The ACL user name for `AUTH`, or nil to authenticate with the password alone.
    public var username: String?
    /// The password for `AUTH`, or nil to skip authentication.
    public var password: String?

    /// Creates a URL from its parts.
    public init(host: String, port: Int = RedisURL.defaultPort, database: Int = 0, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
    }

    /// Parses a `redis://` URL; throws a ``RedisError`` with code ``RedisError/Code/invalidURL`` that says what is wrong.
    ///
    /// The error message never repeats the URL, because it may hold a password.
    public init(parsing string: String) throws(RedisError) {
        let trimmed = string.trimmingWhitespace()
        guard let schemeEnd = trimmed.firstRange(of: "://") else {
            throw Self.invalid("it does not start with redis://")
        }
        let scheme = trimmed[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "redis" else {
            if scheme == "rediss" {
                throw Self.invalid("TLS (rediss://) is not supported, use redis:// to a plain TCP port")
            }
            throw Self.invalid("the scheme is '\(scheme)', expected redis")
        }
        var rest = trimmed[schemeEnd.upperBound...]
        if let cut = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            rest = rest[..<cut]
        }
        let authority: Substring
        let path: Substring
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
            path = ""
        }

        var hostPort = authority
        var username: String?
        var password: String?
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            hostPort = authority[authority.index(after: at)...]
            let user: Substring
            let pass: Substring
            if let colon = userInfo.firstIndex(of: ":") {
                user = userInfo[..<colon]
                pass = userInfo[userInfo.index(after: colon)...]
            } else {
                // `redis://secret@host` is a common shorthand for a password without a user name.
                user = ""
                pass = userInfo
            }
            if !user.isEmpty {
                guard let decoded = Self.percentDecoded(user) else {
                    throw Self.invalid("the user name has an invalid %-escape")
                }
                username = decoded
            }
            if !pass.isEmpty {
                guard let decoded = Self.percentDecoded(pass) else {
                    throw Self.invalid("the password has an invalid %-escape (write a literal % as %25)")
                }
                password = decoded
            }
        }

        let host: Substring
        var portText: Substring = ""
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else {
                throw Self.invalid("the IPv6 address has no closing ]")
            }
            host = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw Self.invalid("unexpected text after the IPv6 address") }
                portText = after.dropFirst()
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = hostPort[..<colon]
            portText = hostPort[hostPort.index(after: colon)...]
        } else {
            host = hostPort
        }
        guard !host.isEmpty else { throw Self.invalid("it names no host") }

        var port = Self.defaultPort
        if !portText.isEmpty {
            guard let value = Int(portText), (1...65_535).contains(value) else {
                throw Self.invalid("the port '\(portText)' is not a number from 1 to 65535")
            }
            port = value
        }

        var database = 0
        let databaseText = path.hasSuffix("/") ? path.dropLast() : path
        if !databaseText.isEmpty {
            guard let value = Int(databaseText), value >= 0 else {
                throw Self.invalid("the path '/\(databaseText)' is not a database number such as /0")
            }
            database = value
        }
        self.init(host: String(host), port: port, database: database, username: username, password: password)
    }

    /// The URL with the password replaced by `***`: safe for logs and error messages.
    public var redacted: String {
        var result = "redis://"
        if let username {
            result += Self.percentEncoded(username)
            result += password == nil ? "@" : ":***@"
        } else if password != nil {
            result += ":***@"
        }
        result += host.contains(":") ? "[\(host)]" : host
        result += ":\(port)/\(database)"
        return result
    }

    /// The redacted URL: the password never appears in a description.
    public var description: String { redacted }

    private static func invalid(_ reason: String) -> RedisError {
        RedisError(
            code: .invalidURL,
            message: "invalid Redis URL: \(reason); expected redis://[[user]:password@]host[:port][/db], e.g. redis://127.0.0.1:6379/0"
        )
    }

    static func percentDecoded(_ text: Substring) -> String? {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func percentEncoded(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                result += byte < 16 ? "%0\(hex)" : "%\(hex)"
            }
        }
        return result
    }
}

private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> Substring {
        guard let first = firstIndex(where: { !$0.isWhitespace }), let last = lastIndex(where: { !$0.isWhitespace }) else {
            return ""
        }
        return self[first...last]
    }
}
