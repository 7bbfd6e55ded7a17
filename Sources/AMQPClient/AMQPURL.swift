/// A parsed `amqp://user:password@host:port/vhost` URL.
///
/// User, password and vhost are percent-decoded; the vhost defaults to `/` (an empty path or a bare `/`),
/// and `%2f` spells a vhost that contains a slash, as in the RabbitMQ URI spec.
public struct AMQPURL: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var vhost: String

    public init(host: String = "127.0.0.1", port: Int = 5672, user: String = "guest", password: String = "guest", vhost: String = "/") {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.vhost = vhost
    }

    /// Parses `string`, throwing an ``AMQPError`` with code `.invalidURL` that says what is wrong.
    public init(_ string: String) throws {
        func invalid(_ why: String) -> AMQPError {
            AMQPError(
                .invalidURL, operation: "parse URL", endpoint: AMQPURL.redact(string),
                fix: "\(why); expected amqp://user:password@host:port/vhost (check BATON_AMQP_URL or --amqp)")
        }
        guard string.hasPrefix("amqp://") else {
            if string.hasPrefix("amqps://") { throw invalid("TLS (amqps://) is not supported by this build") }
            throw invalid("the scheme must be amqp://")
        }
        var rest = Substring(string.dropFirst("amqp://".count))
        var path: Substring? = nil
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var userInfo: Substring? = nil
        if let at = rest.lastIndex(of: "@") {
            userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }
        var user = "guest"
        var password = "guest"
        if let userInfo {
            if let colon = userInfo.firstIndex(of: ":") {
                user = try Self.percentDecode(userInfo[..<colon], invalid)
                password = try Self.percentDecode(userInfo[userInfo.index(after: colon)...], invalid)
            } else {
                user = try Self.percentDecode(userInfo, invalid)
            }
        }
        var host = String(rest)
        var port = 5672
        if rest.hasPrefix("[") {  // IPv6 literal
            guard let close = rest.firstIndex(of: "]") else { throw invalid("unterminated IPv6 address") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let value = Int(after.dropFirst()), (1...65535).contains(value) else { throw invalid("bad port") }
                port = value
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            let portText = rest[rest.index(after: colon)...]
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw invalid("the port '\(portText)' is not a number between 1 and 65535")
            }
            port = value
        }
        if host.isEmpty { host = "localhost" }
        var vhost = "/"
        if let path, !path.isEmpty {
            let query = path.firstIndex(of: "?") ?? path.endIndex
            let raw = path[..<query]
            if !raw.isEmpty { vhost = try Self.percentDecode(raw, invalid) }
        }
        self.init(host: host, port: port, user: user, password: password, vhost: vhost)
    }

    /// The URL with the password replaced by `***`: safe for logs and error messages.
    public var redacted: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let vhostPart = vhost == "/" ? "" : Self.percentEncode(vhost)
        return "amqp://\(Self.percentEncode(user)):***@\(hostPart):\(port)/\(vhostPart)"
    }

    public var description: String { redacted }

    /// Redacts the password of a URL string that may not even parse.
    public static func redact(_ string: String) -> String {
        guard let schemeEnd = string.range(of: "://") else { return string }
        let afterScheme = string[schemeEnd.upperBound...]
        let authorityEnd = afterScheme.firstIndex(of: "/") ?? afterScheme.endIndex
        let authority = afterScheme[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@") else { return string }
        let userInfo = authority[..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return string }
        return String(string[..<colon]) + ":***" + String(string[at...])
    }

    static func percentDecode(_ text: Substring, _ invalid: (String) -> AMQPError) throws -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard iterator.count >= 2, let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16) else {
                    throw invalid("bad percent-escape in '\(text)'")
                }
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
