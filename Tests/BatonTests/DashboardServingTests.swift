import Baton
import BatonHTTP
import Foundation
import TestSupport
import Testing

/// The dashboard's files from `baton serve` (SwiftPM resources of BatonHTTP), `GET /v1/whoami`, and the query token
/// that only the event stream takes.
@Suite("Dashboard files and auth", .serialized, .enabled(if: TestServers.available))
struct DashboardServingTests {
    @Test(.timeLimit(.minutes(1)))
    func theFilesNeedNoTokenAndForbidOtherHosts() async throws {
        try await HTTPAPITests.withServer { http, _ in
            let index = try await http.request("GET", "/")
            #expect(index.status == 200 && index.headers["content-type"] == "text/html; charset=utf-8")
            #expect(index.body.contains(#"<script src="/app.js"></script>"#), "\(index.body.prefix(500))")
            let policy = index.headers["content-security-policy"] ?? ""
            #expect(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "\(policy)")
            for (path, type) in [("/app.js", "text/javascript"), ("/app.css", "text/css"), ("/index.html", "text/html")] {
                let file = try await http.request("GET", path)
                #expect(file.status == 200 && file.headers["content-type"]?.hasPrefix(type) == true, "\(path): \(file.status)")
                #expect(file.headers["x-content-type-options"] == "nosniff")
            }
            // No file refers to another host.
            for path in ["/", "/app.js", "/app.css"] {
                let body = try await http.request("GET", path).body
                #expect(!body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"), "\(path) names a host")
            }
            #expect(try await http.request("GET", "/nope.js").status == 404)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func whoamiTellsTheRoleAndOnlyTheEventStreamTakesAQueryToken() async throws {
        try await HTTPAPITests.withServer { http, _ in
            let viewer = try await http.request("GET", "/v1/whoami", token: HTTPAPITests.viewer)
            #expect(viewer.status == 200)
            #expect(viewer.json["role"] as? String == "viewer" && viewer.json["tokens_required"] as? Bool == true)
            let ana = try await http.request("GET", "/v1/whoami", token: HTTPAPITests.operatorToken)
            #expect(ana.json["role"] as? String == "operator" && ana.json["actor"] as? String == "http:ana (operator)")
            #expect(try await http.request("GET", "/v1/whoami").status == 401)

            let missing = TestServers.uniqueName("dash-missing")
            let query = "?access_token=\(HTTPAPITests.viewer)"
            // The stream route authenticates the query token (then: no such task) …
            let stream = try await http.request("GET", "/v1/tasks/\(missing)/events\(query)", headers: ["Accept": "text/event-stream"])
            #expect(stream.status == 404, "\(stream.body)")
            let wrong = try await http.request(
                "GET", "/v1/tasks/\(missing)/events?access_token=not-a-token", headers: ["Accept": "text/event-stream"])
            #expect(wrong.status == 401)
            // … and no other route does.
            #expect(try await http.request("GET", "/v1/tasks\(query)").status == 401)
            #expect(try await http.request("GET", "/v1/tasks/\(missing)\(query)").status == 401)
        }
        try await HTTPAPITests.withServer(tokens: []) { http, _ in
            let open = try await http.request("GET", "/v1/whoami")
            #expect(open.json["tokens_required"] as? Bool == false && open.json["role"] as? String == "admin")
        }
    }
}
