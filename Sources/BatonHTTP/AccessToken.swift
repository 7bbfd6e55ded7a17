import Baton

/// What a bearer token may do: viewer < operator < admin.
///
/// A viewer reads; an operator also acts on tasks and dead letters (submit, cancel, pause, resume, redrive,
/// discard); admin is every right, for routes that change the fleet itself.
public struct Role: Sendable, Hashable, Comparable, CustomStringConvertible {
    enum Level: Int, Sendable { case viewer = 0, `operator` = 1, admin = 2 }
    let level: Level

    public static let viewer = Role(level: .viewer)
    public static let `operator` = Role(level: .operator)
    public static let admin = Role(level: .admin)

    /// `viewer`, `operator` or `admin`; nil for anything else.
    public init?(_ name: String) {
        switch name.lowercased() {
        case "viewer": level = .viewer
        case "operator": level = .operator
        case "admin": level = .admin
        default: return nil
        }
    }

    init(level: Level) { self.level = level }

    public var description: String {
        switch level {
        case .viewer: "viewer"
        case .operator: "operator"
        case .admin: "admin"
        }
    }

    public static func < (lhs: Role, rhs: Role) -> Bool { lhs.level.rawValue < rhs.level.rawValue }
}

/// One API token the server accepts: its role, a name for the audit stream, and the SHA-256 of the token (the
/// token itself is not kept).
public struct AccessToken: Sendable, Hashable {
    public var role: Role
    /// Who is recorded as the actor of what this token does (`http:<name>`).
    public var name: String
    /// SHA-256 of the token, 32 bytes.
    public var digest: [UInt8]

    public init(role: Role, name: String, digest: [UInt8]) {
        self.role = role
        self.name = name
        self.digest = digest
    }

    /// A token given in clear (from `BATON_HTTP_TOKENS`).
    public init(role: Role, name: String, token: String) {
        self.init(role: role, name: name, digest: SHA256.hash(Array(token.utf8)))
    }

    /// The lower-case hex SHA-256 of `token`: what `http.token_hashes` holds.
    public static func hash(_ token: String) -> String { SHA256.hex(token) }

    /// Parses `http.token_hashes` entries: `role:name:<64 hex digits>`.
    ///
    /// - Throws: a ``BatonError`` (code `configuration`) naming the entry and what to fix.
    public static func parse(hashes entries: [String]) throws -> [AccessToken] {
        try entries.enumerated().map { index, entry in
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            let shape = "http.token_hashes[\(index)] must be role:name:<sha256 hex of the token> (role viewer, operator or admin)"
            guard parts.count == 3, let role = Role(parts[0]), !parts[1].isEmpty else {
                throw BatonError(.configuration, shape + "; got \"\(redacted(entry))\"", field: ConfigKeys.httpTokenHashes)
            }
            guard let digest = hexBytes(parts[2]), digest.count == 32 else {
                throw BatonError(
                    .configuration, shape + ": the hash of '\(parts[1])' is not 64 hex digits (make it with `printf %s TOKEN | sha256sum`)",
                    field: ConfigKeys.httpTokenHashes)
            }
            return AccessToken(role: role, name: parts[1], digest: digest)
        }
    }

    /// Parses `BATON_HTTP_TOKENS`: comma-separated `role:TOKEN` or `role:name:TOKEN` (the name defaults to the role).
    ///
    /// - Throws: a ``BatonError`` (code `configuration`) naming the entry (never the token) and what to fix.
    public static func parse(plain text: String) throws -> [AccessToken] {
        let entries = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return try entries.enumerated().map { index, entry in
            let parts = entry.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            let shape = "BATON_HTTP_TOKENS entry \(index + 1) must be role:TOKEN or role:name:TOKEN (role viewer, operator or admin)"
            guard parts.count >= 2, let role = Role(parts[0]) else {
                throw BatonError(.configuration, shape + "; it starts with \"\(parts[0].prefix(12))\"", field: "BATON_HTTP_TOKENS")
            }
            let name = parts.count == 3 ? parts[1] : parts[0]
            let token = parts[parts.count - 1]
            guard !name.isEmpty, token.count >= 8 else {
                throw BatonError(.configuration, shape + ": the token must be at least 8 characters", field: "BATON_HTTP_TOKENS")
            }
            return AccessToken(role: role, name: name, token: token)
        }
    }

    /// Parses `http.metrics_token_hash` (64 hex digits).
    ///
    /// - Throws: a ``BatonError`` (code `configuration`) saying how to make one.
    public static func parse(metricsHash text: String) throws -> [UInt8] {
        guard let digest = hexBytes(text), digest.count == 32 else {
            throw BatonError(
                .configuration, "http.metrics_token_hash must be 64 hex digits: the SHA-256 of the token (`printf %s TOKEN | sha256sum`)",
                field: ConfigKeys.httpMetricsTokenHash)
        }
        return digest
    }

    static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.lowercased().utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }

    static func redacted(_ entry: String) -> String { entry.count > 16 ? String(entry.prefix(16)) + "…" : entry }

    /// Compares digests in time independent of where they differ.
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
