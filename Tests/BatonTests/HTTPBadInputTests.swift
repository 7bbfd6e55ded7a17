import Baton
import Foundation
import TestSupport
import Testing

extension HTTPAPITests {
    /// Issue 7, "Bad input" over HTTP: the server runs in this process, so a body that crashed the JSON decoder
    /// (513 unclosed `[`) would end the test run; each is a 400 problem naming the limit instead.
    @Test("Deeply nested, truncated and wrongly typed submits and signals over HTTP are 400/422 problems; the server keeps serving")
    func badBodiesOverHTTP() async throws {
        let id = try await Self.waitingTask(agent: TestServers.uniqueName("http-bad"))
        try await Self.withServer { http, client in
            let unclosed = #"{"agent":"stepchain","input":"# + String(repeating: "[", count: 512)
            let deep =
                #"{"agent":"stepchain","input":"# + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
            for body in [unclosed, deep] {
                let reply = try await http.request("POST", "/v1/tasks", token: Self.operatorToken, body: body)
                Self.expectProblem(reply, 400, "bad-request")
                #expect(reply.body.contains("more than \(JSONCoding.foundationDepth) levels"), "\(reply.body)")
                let signal = try await http.request(
                    "POST", "/v1/tasks/\(id)/signals/callback", token: Self.operatorToken,
                    body: #"{"payload":"# + String(repeating: "[", count: 512))
                Self.expectProblem(signal, 400, "bad-request")
            }
            let middling = #"{"agent":"stepchain","input":"# + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + "}"
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks", token: Self.operatorToken, body: middling), 422, "invalid-message",
                detail: "more than \(JSONCoding.maxDepth) levels")
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks", token: Self.operatorToken, body: #"{"agent":"stepchain","input":{"#), 400,
                "bad-request")
            Self.expectProblem(
                try await http.request("POST", "/v1/tasks", token: Self.operatorToken, body: #"{"agent":7}"#), 422, "invalid-message",
                detail: "agent")
            // Still serving, and the waiting task is untouched.
            #expect(try await http.request("GET", "/v1/tasks/\(id)", token: Self.viewer).status == 200)
            #expect(try await client.queries.task(id)?.status == "waiting")
        }
    }
}
