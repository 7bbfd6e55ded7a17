import Baton
import Foundation
import Testing

@testable import BatonHTTP

/// Token hashing and parsing, and the bind rules: no servers needed.
@Suite("HTTP access")
struct AccessTokenTests {
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
    ])
    func sha256MatchesTheFIPSVectors(message: String, digest: String) {
        #expect(SHA256.hex(message) == digest)
    }

    @Test func sha256OfAMillionAs() {
        #expect(SHA256.hex(String(repeating: "a", count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func hashedTokensParseAndBadOnesNameTheEntry() throws {
        let hash = AccessToken.hash("s3cret-token")
        let tokens = try AccessToken.parse(hashes: ["operator:ana:\(hash)", "viewer:dash:\(hash.uppercased())"])
        #expect(tokens.map(\.role) == [.operator, .viewer])
        #expect(tokens.map(\.name) == ["ana", "dash"])
        #expect(tokens[0].digest == tokens[1].digest)
        #expect(tokens[0].digest == AccessToken(role: .viewer, name: "x", token: "s3cret-token").digest)

        let badRole = #expect(throws: BatonError.self) { try AccessToken.parse(hashes: ["root:ana:\(hash)"]) }
        #expect(badRole?.message.contains("http.token_hashes[0] must be role:name:") == true)
        let badHash = #expect(throws: BatonError.self) { try AccessToken.parse(hashes: ["viewer:ana:abc"]) }
        #expect(badHash?.message.contains("not 64 hex digits") == true)
    }

    @Test func plainTokensTakeAnOptionalNameAndNeverEchoTheToken() throws {
        let tokens = try AccessToken.parse(plain: "viewer:viewtoken1, operator:ana:optoken12")
        #expect(tokens.map(\.role) == [.viewer, .operator])
        #expect(tokens.map(\.name) == ["viewer", "ana"])
        #expect(tokens[1].digest == SHA256.hash(Array("optoken12".utf8)))
        let short = #expect(throws: BatonError.self) { try AccessToken.parse(plain: "operator:abc") }
        #expect(short?.message.contains("at least 8 characters") == true)
        let unknown = #expect(throws: BatonError.self) { try AccessToken.parse(plain: "superuser:abcdefghij") }
        #expect(unknown?.message.contains("BATON_HTTP_TOKENS entry 1") == true)
        #expect(unknown?.message.contains("abcdefghij") == false)
    }

    @Test func rolesAreOrdered() {
        #expect(Role.viewer < .operator && Role.operator < .admin)
        #expect(Role("Operator") == .operator && Role("root") == nil)
    }

    @Test func aNonLoopbackBindNeedsTokens() throws {
        #expect(try BatonHTTPServer.Configuration.parseBind("127.0.0.1:8080") == ("127.0.0.1", 8080))
        #expect(try BatonHTTPServer.Configuration.parseBind("[::1]:9000") == ("::1", 9000))
        #expect(throws: BatonError.self) { try BatonHTTPServer.Configuration.parseBind("localhost") }
        try BatonHTTPServer.Configuration(host: "127.0.0.1", port: 8080).validate()
        let open = #expect(throws: BatonError.self) { try BatonHTTPServer.Configuration(host: "0.0.0.0", port: 8080).validate() }
        #expect(open?.message.contains("refusing to listen on 0.0.0.0:8080 without API tokens") == true)
        #expect(open?.message.contains("BATON_HTTP_TOKENS") == true)
        let withToken = AccessToken(role: .viewer, name: "v", token: "viewer-token")
        try BatonHTTPServer.Configuration(host: "0.0.0.0", port: 8080, tokens: [withToken]).validate()
    }

    @Test func anIdempotencyKeyBecomesAStableTaskID() {
        #expect(APIRoutes.taskID(idempotencyKey: "order-42") == "order-42")
        let hashed = APIRoutes.taskID(idempotencyKey: "order 42/é")
        #expect(hashed.hasPrefix("idem-") && hashed.count == 37 && TaskID.isValid(hashed))
        #expect(APIRoutes.taskID(idempotencyKey: "order 42/é") == hashed)
    }

    @Test func theHTTPKeysComeFromTheFileAndTheEnvironmentAndABadBindNamesItsLine() async throws {
        let path = NSTemporaryDirectory() + "baton-http-\(UInt64.random(in: 0..<UInt64.max)).yaml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let hash = AccessToken.hash("dashboard-token")
        try "http:\n  bind: 0.0.0.0:9000\n  token_hashes: [\"viewer:dash:\(hash)\"]\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        let loaded = try await BatonConfiguration.load(file: path, environment: ["BATON_HTTP_READ_ONLY": "true"], workerID: "t")
        #expect(loaded.http.bind == "0.0.0.0:9000" && loaded.http.readOnly && loaded.http.metricsTokenHash == nil)
        #expect(try AccessToken.parse(hashes: loaded.http.tokenHashes).map(\.name) == ["dash"])
        #expect(try await BatonConfiguration.load(file: nil, environment: [:], workerID: "t").http == HTTPSettings())

        try "http:\n  bind: everywhere\n".write(toFile: path, atomically: true, encoding: .utf8)
        let error = await #expect(throws: BatonError.self) {
            try await BatonConfiguration.load(file: path, environment: [:], workerID: "t")
        }
        #expect(error?.message.contains("http.bind must be host:port") == true, "\(String(describing: error))")
        #expect(error?.message.contains("\(path):2") == true, "\(String(describing: error))")
    }
}
