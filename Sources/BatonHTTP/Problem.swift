import Baton
import Foundation
import Hummingbird

/// An error answer of the HTTP API: `application/problem+json` (RFC 9457) with `type`, `title`, `status`,
/// `detail` (what went wrong) and `fix` (what to do about it).
public struct Problem: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    /// A short stable code; the `type` is `urn:baton:problem:<code>`.
    public var code: String
    public var title: String
    public var detail: String
    public var fix: String
    /// Extra headers (`WWW-Authenticate`, `Allow`).
    var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, code: String, title: String, detail: String, fix: String) {
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.fix = fix
    }

    public var description: String { "\(status.code) \(title): \(detail)" }

    static let contentType = "application/problem+json"

    /// The response that carries this problem.
    var response: Response {
        let body = JSONValue.object([
            "type": .string("urn:baton:problem:\(code)"), "title": .string(title), "status": .int(Int64(status.code)),
            "detail": .string(detail), "fix": .string(fix),
        ])
        var fields = headers
        fields[.contentType] = Self.contentType
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: body.jsonString)))
    }

    static func badRequest(_ detail: String, fix: String) -> Problem {
        Problem(.badRequest, code: "bad-request", title: "Bad request", detail: detail, fix: fix)
    }

    static func notFound(_ detail: String, fix: String) -> Problem {
        Problem(.notFound, code: "not-found", title: "Not found", detail: detail, fix: fix)
    }

    static func conflict(_ detail: String, fix: String) -> Problem {
        Problem(.conflict, code: "conflict", title: "Conflict", detail: detail, fix: fix)
    }

    /// Any error thrown by a handler, as a problem: ``BatonError`` codes map to their status; anything else is a 500
    /// whose detail is the error's description.
    static func from(_ error: any Error) -> Problem {
        if let problem = error as? Problem { return problem }
        if let error = error as? BatonError {
            switch error.code {
            case .notFound: return .notFound(error.message, fix: "check the id")
            case .conflict: return .conflict(error.message, fix: "look at the resource's current state and retry if it still applies")
            case .invalidMessage, .unknownAgent:
                return Problem(
                    .unprocessableContent, code: error.code.description.replacingOccurrences(of: "_", with: "-"), title: "Invalid request",
                    detail: error.message, fix: error.field.map { "fix the field '\($0)'" } ?? "fix the request body")
            case .oversized:
                return Problem(.contentTooLarge, code: "too-large", title: "Too large", detail: error.message, fix: "send a smaller body")
            case .connection, .queueFull:
                return Problem(
                    .serviceUnavailable, code: error.code.description.replacingOccurrences(of: "_", with: "-"),
                    title: "Unavailable", detail: error.message, fix: "check RabbitMQ and Redis (`baton doctor`), then retry")
            default: break
            }
        }
        if let error = error as? HTTPError {
            switch error.status {
            case .notFound:
                return .notFound(
                    "no route for this method and path", fix: "see the HTTP API section of the README for the routes under /v1")
            case .contentTooLarge:
                return Problem(
                    .contentTooLarge, code: "too-large", title: "Too large", detail: error.body ?? "the request body is too large",
                    fix: "send a smaller body")
            default:
                return Problem(
                    error.status, code: "http-\(error.status.code)", title: error.status.reasonPhrase, detail: error.body ?? "\(error)",
                    fix: "fix the request")
            }
        }
        return Problem(
            .internalServerError, code: "internal", title: "Internal error", detail: "\(error)",
            fix: "retry; if it persists, check the server's log and RabbitMQ/Redis (`baton doctor`)")
    }
}

/// Turns every error (also the router's 404) into `application/problem+json`.
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let problem = Problem.from(error)
            if problem.status == .internalServerError {
                context.logger.error("request failed", metadata: ["http.path": "\(request.uri.path)", "error": "\(error)"])
            }
            return problem.response
        }
    }
}
