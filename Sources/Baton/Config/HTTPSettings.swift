import Configuration

/// The settings of `baton serve` (the HTTP API) that the configuration holds.
///
/// | key | default |
/// |---|---|
/// | `http.bind` | 127.0.0.1:8080 |
/// | `http.read_only` | false |
/// | `http.token_hashes` | [] |
/// | `http.metrics_token_hash` | ~ (none: `/metrics` is open) |
///
/// Tokens themselves never appear in the file: it holds `role:name:<sha256 hex of the token>` entries. The plain
/// tokens of `BATON_HTTP_TOKENS` are read by `baton serve` itself (the simple way for one machine).
public struct HTTPSettings: Sendable, Hashable {
    /// `host:port` to listen on; loopback unless tokens are configured.
    public var bind = "127.0.0.1:8080"
    /// Refuse every mutating route with 405.
    public var readOnly = false
    /// `role:name:sha256hex` entries (role viewer, operator or admin).
    public var tokenHashes: [String] = []
    /// The SHA-256 hex of the token `GET /metrics` requires; nil leaves it open (like `/healthz`).
    public var metricsTokenHash: String?

    public init() {}

    /// Reads the `http.*` keys.
    ///
    /// - Throws: a ``BatonError`` (code `configuration`, `field` = the key) for a bad value.
    public init(reader: ConfigReader) throws {
        self.init()
        bind = reader.batonString(ConfigKeys.httpBind, default: bind)
        guard let colon = bind.lastIndex(of: ":"), colon != bind.startIndex, let port = Int(bind[bind.index(after: colon)...]),
            (0...65_535).contains(port)
        else { throw ConfigReader.invalid(ConfigKeys.httpBind, bind, "host:port, e.g. 127.0.0.1:8080 or [::1]:8080") }
        readOnly = try reader.batonBool(ConfigKeys.httpReadOnly, default: readOnly)
        tokenHashes = reader.batonList(ConfigKeys.httpTokenHashes) ?? []
        metricsTokenHash = reader.batonText(ConfigKeys.httpMetricsTokenHash)
    }
}
