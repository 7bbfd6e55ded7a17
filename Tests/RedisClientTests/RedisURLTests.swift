import RedisClient
import Testing

@Suite("RedisURL parsing")
struct RedisURLTests {
    @Test func defaultsPortAndDatabase() throws {
        let url = try RedisURL(parsing: "redis://example.com")
        #expect(url.host == "example.com")
        #expect(url.port == 6379)
        #expect(url.database == 0)
        #expect(url.username == nil)
        #expect(url.password == nil)
        #expect(url.redacted == "redis://example.com:6379/0")
    }

    @Test func hostPortAndDatabase() throws {
        let url = try RedisURL(parsing: "redis://127.0.0.1:6390/3")
        #expect(url.host == "127.0.0.1")
        #expect(url.port == 6390)
        #expect(url.database == 3)
        #expect(url.redacted == "redis://127.0.0.1:6390/3")
    }

    @Test func passwordOnly() throws {
        let url = try RedisURL(parsing: "redis://:s3cret@localhost:6380/2")
        #expect(url.username == nil)
        #expect(url.password == "s3cret")
        #expect(url.redacted == "redis://:***@localhost:6380/2")
        #expect(!"\(url)".contains("s3cret"))
    }

    @Test func userAndPercentEncodedPassword() throws {
        let url = try RedisURL(parsing: "redis://app%2Duser:p%40ss%3Aw%2Fo%25rd@db.internal:6379/15")
        #expect(url.username == "app-user")
        #expect(url.password == "p@ss:w/o%rd")
        #expect(url.database == 15)
        #expect(url.redacted == "redis://app-user:***@db.internal:6379/15")
    }

    @Test func literalAtSignInPasswordUsesTheLastAt() throws {
        let url = try RedisURL(parsing: "redis://:p@ss@host:1234")
        #expect(url.password == "p@ss")
        #expect(url.host == "host")
        #expect(url.port == 1234)
    }

    @Test func passwordShorthandWithoutColon() throws {
        let url = try RedisURL(parsing: "redis://token123@host/1")
        #expect(url.username == nil)
        #expect(url.password == "token123")
        #expect(url.database == 1)
    }

    @Test func ipv6AndTrailingSlash() throws {
        let url = try RedisURL(parsing: "redis://[::1]:7000/")
        #expect(url.host == "::1")
        #expect(url.port == 7000)
        #expect(url.database == 0)
        #expect(url.redacted == "redis://[::1]:7000/0")
    }

    @Test func schemeIsCaseInsensitiveAndQueryIgnored() throws {
        let url = try RedisURL(parsing: "  REDIS://h:1/4?timeout=3  ")
        #expect(url.host == "h")
        #expect(url.port == 1)
        #expect(url.database == 4)
    }

    @Test(arguments: [
        ("http://host:6379", "scheme"),
        ("rediss://host:6379", "TLS"),
        ("host:6379", "redis://"),
        ("redis://:6379/0", "no host"),
        ("redis://host:abc/0", "port"),
        ("redis://host:70000/0", "port"),
        ("redis://host:6379/x", "database"),
        ("redis://host:6379/-1", "database"),
        ("redis://:bad%zzsecret@host", "%-escape"),
        ("redis://[::1:6379", "IPv6"),
    ])
    func rejectsMalformedURLs(input: String, mentions: String) {
        do {
            _ = try RedisURL(parsing: input)
            Issue.record("parsed \(input)")
        } catch {
            #expect(error.code == .invalidURL)
            #expect(error.message.contains(mentions), "\(error.message)")
            #expect(!error.message.contains("secret"))
        }
    }

    @Test func configurationDefaults() throws {
        let configuration = try RedisConfiguration(url: "redis://127.0.0.1:6390/0")
        #expect(configuration.connectTimeout == .seconds(5))
        #expect(configuration.commandTimeout == .seconds(10))
        #expect(configuration.reconnectBackoff == .default)
        #expect(configuration.maximumQueuedCommands == 100_000)
    }
}
