import Baton
import Hummingbird
import NIOCore
import ServiceLifecycle

/// A task's events as server-sent events (`text/event-stream`): the history after `after`, then new events as
/// they are appended, in stream order. Each event's `id:` is its Redis stream id, so a client that reconnects with
/// `Last-Event-ID` goes on exactly after the last event it saw; `event:` is the event type and `data:` the event
/// as `GET /v1/tasks/{id}/history` shows it.
///
/// The stream is read by polling `XRANGE` on the shared connection every `pollInterval` while there is nothing
/// new (no blocking read holds a connection per client); it ends when the client goes away or the server shuts
/// down.
struct EventStream: Sendable {
    var task: String
    var after: String
    var queries: TaskQueries
    var pollInterval: Duration
    var keepAlive: Duration

    var response: Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        let stream = self
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in try await stream.write(to: &writer) })
    }

    func write(to writer: inout any ResponseBodyWriter) async throws {
        var last = after
        var quietSince = ContinuousClock.now
        try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let events = try await queries.history(task, after: last, count: 500)
            guard let newest = events.last else {
                if ContinuousClock.now - quietSince >= keepAlive {
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    quietSince = .now
                }
                try await Task.sleep(for: pollInterval)
                continue
            }
            var text = ""
            for event in events {
                text += "id: \(event.id)\nevent: \(event.type)\ndata: \(try JSONCoding.string(event))\n\n"
            }
            try await writer.write(ByteBuffer(string: text))
            last = newest.id
            quietSince = .now
        }
        try await writer.finish(nil)
    }
}
