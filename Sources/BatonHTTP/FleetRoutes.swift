import Baton
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceLifecycle

extension APIRoutes {
    /// Fleet-wide routes: `POST /v1/workers/{id}/drain` and the fleet's live event stream `GET /v1/events`.
    func registerFleet(on router: Router<BasicRequestContext>) {
        act(router, "/v1/workers/:id/drain", drainWorker)
        // EventSource cannot send headers: like a task's stream, the fleet's takes the token as `?access_token=`.
        router.get("/v1/events") { request, context in
            try await fleetEvents(request, context, try authenticate(request, minimum: .viewer, queryToken: true))
        }
    }

    /// `GET /v1/events?agent=` with `Accept: text/event-stream`: every task's events live, as the relay publishes
    /// them to `baton.events` (``EventSubscription``): `event:` the type, `data:` the event JSON of DESIGN.md §6. A
    /// live tail without replay: a slow client loses the oldest events beyond ``EventSubscription/maxQueued``; the
    /// durable record is each task's history.
    func fleetEvents(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        guard (request.headers[.accept] ?? "").contains("text/event-stream") else {
            throw Problem(
                .notAcceptable, code: "not-acceptable", title: "Event stream only",
                detail: "GET /v1/events is a server-sent event stream", fix: "send `Accept: text/event-stream` (an EventSource does)")
        }
        guard let amqpURL = configuration.amqpURL else {
            throw Problem(
                .serviceUnavailable, code: "no-broker", title: "No broker", detail: "this server has no RabbitMQ URL to tail events from",
                fix: "give baton serve --amqp URL (or BATON_AMQP_URL)")
        }
        let agent = Self.nonEmpty(request.uri.queryParameters["agent"])
        if let agent, !TaskID.isValidName(agent) {
            throw Problem.badRequest("'\(agent)' is not an agent name", fix: "pass ?agent=NAME (letters, digits, '-', '_', '.')")
        }
        let subscription = try await client.subscribeEvents(agent: agent, amqpURL: amqpURL)
        let keepAlive = configuration.eventKeepAlive
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer { Task { await subscription.close() } }
                try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
                // Keep-alives while quiet: a timer task yields into the same stream as the events.
                let (ticks, tick) = AsyncStream.makeStream(of: [EventSubscription.Event]?.self, bufferingPolicy: .bufferingNewest(16))
                let pump = Task {
                    for await batch in subscription.batches { tick.yield(batch) }
                    tick.finish()
                }
                let timer = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: keepAlive)
                        tick.yield(nil)
                    }
                }
                defer {
                    pump.cancel()
                    timer.cancel()
                }
                // A graceful shutdown ends the stream at once (not at the next event or keep-alive).
                try await withGracefulShutdownHandler {
                    for await item in ticks {
                        guard let batch = item else {
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                            continue
                        }
                        var text = ""
                        for event in batch {
                            let type = event.routingKey.split(separator: ".").last.map(String.init) ?? "event"
                            text += "event: \(type)\ndata: \(String(decoding: event.body, as: UTF8.self))\n\n"
                        }
                        try await writer.write(ByteBuffer(string: text))
                    }
                } onGracefulShutdown: {
                    tick.finish()
                }
                try await writer.finish(nil)
            })
    }

    /// `POST /v1/workers/{id}/drain` `{"reason"?}` (operator): asks the worker to drain and exit, as `baton workers
    /// --drain ID` does. 202 `{"worker", "result": "drain_requested", "actor", "reason"}`; 404 when no such worker is
    /// registered.
    func drainWorker(_ request: Request, _ context: BasicRequestContext, _ caller: Caller) async throws -> Response {
        let id = try context.parameters.require("id")
        let reason = try await body(request, required: false)?["reason"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? "no reason given"
        guard try await client.requestDrain(worker: id, actor: caller.actor, reason: reason) else {
            throw Problem.notFound("no live worker '\(id)'", fix: "use an id GET /v1/workers lists")
        }
        let answer = JSONValue.object([
            "worker": .string(id), "result": "drain_requested", "actor": .string(caller.actor), "reason": .string(reason),
        ])
        return try Self.json(answer, status: .accepted)
    }

    /// `GET /v1/dead?format=jsonl&<filters>`: every dead letter the filters select (or `limit`), with its body, one JSON
    /// object a line (`application/x-ndjson`, a download named `dead-letters.jsonl`), as `baton dead export` writes.
    func exportDead(_ filter: DeadLetterFilter, limit: Substring?) async throws -> Response {
        let limit = try Self.nonEmpty(limit).map { _ in try Self.limit(limit, default: 100, maximum: 1_000_000) }
        let letters = try await queries.deadLetters(matching: filter, limit: limit).items
        var text = ""
        for letter in letters { text += try JSONCoding.string(letter) + "\n" }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        headers[.contentDisposition] = "attachment; filename=\"dead-letters.jsonl\""
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
