import AMQPClient
import BatonExamples
import Foundation
import RedisClient
import Synchronization
import TestSupport
import Testing

@testable import Baton

#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 receiver on 127.0.0.1 for webhook tests: a blocking accept loop on a thread of its own
/// (one request per connection, `Connection: close`). `answer` picks the status of each request.
final class WebhookReceiver: Sendable {
    struct Request: Sendable {
        var headers: [String: String]
        var body: String
    }

    let port: UInt16
    private let fd: Int32
    private let requests = Mutex<[Request]>([])
    private let answer: @Sendable (Request, Int) -> Int

    /// Listens on `port` (0: any free port).
    init(port: UInt16 = 0, answer: @escaping @Sendable (Request, Int) -> Int = { _, _ in 200 }) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw SpawnError(message: "cannot listen on 127.0.0.1:\(port): errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        self.port = UInt16(bigEndian: address.sin_port)
        self.answer = answer
        let thread = Thread { [self] in self.serve() }
        thread.start()
    }

    var received: [Request] { requests.withLock { $0 } }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }
            handle(client)
            close(client)
        }
    }

    private func handle(_ client: Int32) {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var headerEnd: Int?
        var contentLength = 0
        while true {
            let n = read(client, &buffer, buffer.count)
            guard n > 0 else { return }
            data += buffer[0..<n]
            if headerEnd == nil, let range = findHeaderEnd(data) {
                headerEnd = range
                let head = String(decoding: data[0..<range], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    contentLength = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
            if let end = headerEnd, data.count >= end + 4 + contentLength { break }
        }
        guard let end = headerEnd else { return }
        let lines = String(decoding: data[0..<end], as: UTF8.self).split(separator: "\r\n").dropFirst()
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let request = Request(headers: headers, body: String(decoding: data[(end + 4)..<(end + 4 + contentLength)], as: UTF8.self))
        let index = requests.withLock {
            $0.append(request)
            return $0.count - 1
        }
        let status = answer(request, index)
        let response = "HTTP/1.1 \(status) X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        _ = response.utf8CString.withUnsafeBufferPointer { write(client, $0.baseAddress, $0.count - 1) }
    }

    private func findHeaderEnd(_ data: [UInt8]) -> Int? {
        guard data.count >= 4 else { return nil }
        for i in 0...(data.count - 4) where data[i] == 13 && data[i + 1] == 10 && data[i + 2] == 13 && data[i + 3] == 10 { return i }
        return nil
    }
}

/// Events on `baton.events` and signed webhooks, with a real `baton worker` child on a vhost and key prefix of
/// the test's own (acceptance 7 of issue 5).
@Suite("Integration: events and webhooks", .serialized, .enabled(if: TestServers.available))
struct IntegrationEventsTests {
    static let secret = "whsec_" + Data("baton-test-secret-0123456789".utf8).base64EncodedString()

    static func startWorker(_ servers: WaitServers, _ name: String, client: BatonClient) async throws -> Harness.Worker {
        let id = TestServers.uniqueName("it-\(name)")
        var environment = servers.environment()
        environment["BATON_WEBHOOKS_SECRET"] = secret
        environment["BATON_WEBHOOKS_ALLOW_HOSTS"] = "127.0.0.1"
        environment["BATON_WEBHOOKS_RETRY_SCHEDULE"] =
            "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s"
        let process = try WorkerProcess.start(
            executable: try Harness.baton(), arguments: ["worker", "--id", id, "--lease", "3", "--drain-timeout", "3"],
            environment: environment, outputFile: try TestFiles.path("worker-\(name)") + ".log")
        return try await Harness.registered(process, id: id, client: client, timeout: .seconds(20))
    }

    /// Whether `request` carries a valid Standard Webhooks signature under the test secret.
    static func verifies(_ request: WebhookReceiver.Request) -> Bool {
        guard let id = request.headers["webhook-id"], let timestamp = request.headers["webhook-timestamp"],
            let signatures = request.headers["webhook-signature"], let key = Data(base64Encoded: String(secret.dropFirst(6)))
        else { return false }
        let expected =
            "v1," + Data(SHA256.hmac(key: Array(key), message: Array("\(id).\(timestamp).\(request.body)".utf8))).base64EncodedString()
        return signatures.split(separator: " ").contains { $0 == expected }
    }

    /// 7a: a consumer bound with `#` sees every event of each task, in stream order, matching its history.
    @Test(.timeLimit(.minutes(4))) func aConsumerSeesEveryEventOfEachTaskInOrder() async throws {
        try await WaitServers.with { servers, client in
            let worker = try await Self.startWorker(servers, "events", client: client)
            defer { worker.process.sigkill() }
            let listener = try await EventsListener.start(servers, routingKey: "#", prefetch: 500)
            defer { listener.cancel() }
            var ids: [String] = []
            for n in 0..<3 {
                let id = TestServers.uniqueName("ev\(n)")
                ids.append(try await Harness.submit(client, Harness.stepchain(id: id, steps: 4 + n)))
            }
            for id in ids { try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker]) }
            for id in ids {
                let history = try await client.queries.history(id)
                #expect(history.last?.type == "succeeded")
                let complete = await eventually(timeout: .seconds(20)) {
                    listener.heard.withLock { all in
                        Set(all.filter { $0.body["task_id"]?.stringValue == id }.compactMap { $0.body["id"]?.stringValue }).count
                    }
                        >= history.count
                }
                #expect(complete, "the consumer did not get all \(history.count) events of \(id)")
                // At least once: duplicates are possible after a crash; consumers dedupe by `id`. In order per task.
                var unique: [JSONValue] = []
                var seenIDs: Set<String> = []
                for entry in listener.heard.withLock({ $0 }) where entry.body["task_id"]?.stringValue == id {
                    let eventID = entry.body["id"]?.stringValue ?? ""
                    if seenIDs.insert(eventID).inserted { unique.append(entry.body) }
                    #expect(entry.routingKey == "stepchain.\(id).\(entry.body["type"]?.stringValue ?? "")")
                }
                #expect(unique.map { $0["type"]?.stringValue ?? "" } == history.map(\.type))
                #expect(unique.map { $0["seq"]?.intValue ?? -1 } == history.map(\.seq))
                #expect(unique.map { $0["stream_id"]?.stringValue ?? "" } == history.map(\.id))
                #expect(unique.allSatisfy { $0["agent"]?.stringValue == "stepchain" && $0["v"]?.intValue == 1 && $0["at"] != nil })
                #expect(unique.last?["status"]?.stringValue == "succeeded")
            }
            await listener.stop()
        }
    }

    /// 7b: a receiver gets signed webhooks that verify; a retried event keeps its `webhook-id`.
    @Test(.timeLimit(.minutes(4))) func aReceiverGetsSignedWebhooksWithStableIDs() async throws {
        try await WaitServers.with { servers, client in
            // The first request fails (HTTP 503): its event is retried with the same id.
            let receiver = try WebhookReceiver { _, index in index == 0 ? 503 : 200 }
            defer { receiver.stop() }
            let worker = try await Self.startWorker(servers, "webhooks", client: client)
            defer { worker.process.sigkill() }
            var request = Harness.stepchain(id: TestServers.uniqueName("wh"), steps: 3)
            request.notify = .init(webhook: "http://127.0.0.1:\(receiver.port)/hooks/baton")
            let id = try await Harness.submit(client, request)
            try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            let history = try await client.queries.history(id)
            let all = await eventually(timeout: .seconds(30)) {
                Set(receiver.received.compactMap { $0.headers["webhook-id"] }).count >= history.count
            }
            #expect(all, "the receiver got \(receiver.received.count) requests for \(history.count) events")
            let received = receiver.received
            #expect(received.allSatisfy(Self.verifies), "a webhook signature did not verify")
            #expect(received.count >= 2 && received[0].headers["webhook-id"] == received[1].headers["webhook-id"])
            let delivered = received.dropFirst().map { (try? JSONValue.parse(Array($0.body.utf8))) ?? .null }
            #expect(delivered.map { $0["type"]?.stringValue ?? "" } == history.map(\.type))
            #expect(delivered.map { $0["seq"]?.intValue ?? -1 } == history.map(\.seq))
            #expect(received.allSatisfy { $0.headers["webhook-id"]?.hasPrefix("evt_\(id)_") == true })
            let view = try #require(try await client.queries.task(id))
            #expect(view.webhook?.delivered == Int64(history.count))
            #expect(view.webhook?.failing == false)
        }
    }

    /// HTTP 410 Gone disables the task's webhook after one request; the task view says so.
    @Test(.timeLimit(.minutes(4))) func aGoneEndpointIsDisabledForTheTask() async throws {
        try await WaitServers.with { servers, client in
            let receiver = try WebhookReceiver { _, _ in 410 }
            defer { receiver.stop() }
            let worker = try await Self.startWorker(servers, "webhooks-gone", client: client)
            defer { worker.process.sigkill() }
            var request = Harness.stepchain(id: TestServers.uniqueName("whgone"), steps: 2)
            request.notify = .init(webhook: "http://127.0.0.1:\(receiver.port)/gone")
            let id = try await Harness.submit(client, request)
            try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            var view: TaskView?
            let disabled = try await eventually(timeout: .seconds(20)) {
                view = try await client.queries.task(id)
                return view?.webhook?.disabled != nil
            }
            #expect(disabled, "the webhook was not disabled: \(String(describing: view?.webhook))")
            #expect(view?.webhook?.failing == false)
            #expect(receiver.received.count == 1)
        }
    }

    /// 7c: a receiver that is down for 10 s still gets every event afterwards; meanwhile the task has finished
    /// and its view shows the webhook failing.
    @Test(.timeLimit(.minutes(4))) func aReceiverDownForTenSecondsGetsEveryEventAfterwards() async throws {
        try await WaitServers.with { servers, client in
            let port = UInt16(try TestPorts.free())
            let worker = try await Self.startWorker(servers, "webhooks-down", client: client)
            defer { worker.process.sigkill() }
            var request = Harness.stepchain(id: TestServers.uniqueName("whdown"), steps: 3)
            request.notify = .init(webhook: "http://127.0.0.1:\(port)/hooks/baton")
            let id = try await Harness.submit(client, request)
            let down = ContinuousClock.now
            try await Harness.waitForStatus(client, id, ["succeeded"], workers: [worker])
            var failing: TaskView?
            let sawFailing = try await eventually(timeout: .seconds(9)) {
                failing = try await client.queries.task(id)
                return failing?.webhook?.failing == true && (failing?.webhook?.attempts ?? 0) >= 1
            }
            #expect(sawFailing, "the task view never showed the webhook failing: \(String(describing: failing?.webhook))")
            #expect(failing?.status == "succeeded")
            #expect(failing?.webhook?.lastError?.isEmpty == false)
            #expect(failing?.webhook?.nextAttemptAt != nil)
            // The same through the CLI: `baton status --json` shows the webhook failing on a finished task.
            let status = try await servers.cli(["status", id, "--json"])
            let shown = try JSONValue.parse(Array(status.output.utf8))
            #expect(status.status == 0)
            #expect(shown["status"]?.stringValue == "succeeded")
            #expect(shown["webhook"]?["failing"] == .bool(true))
            #expect((shown["webhook"]?["attempts"]?.intValue ?? 0) >= 1)
            // The receiver comes up 10 s after the task started.
            let wait = down + .seconds(10) - ContinuousClock.now
            if wait > .zero { try await Task.sleep(for: wait) }
            let receiver = try WebhookReceiver(port: port)
            defer { receiver.stop() }
            let history = try await client.queries.history(id)
            let all = await eventually(timeout: .seconds(30)) {
                Set(receiver.received.compactMap { $0.headers["webhook-id"] }).count >= history.count
            }
            #expect(all, "the receiver got \(receiver.received.count) requests for \(history.count) events")
            #expect(receiver.received.allSatisfy(Self.verifies))
            let delivered = receiver.received.map { (try? JSONValue.parse(Array($0.body.utf8))) ?? .null }
            #expect(delivered.map { $0["type"]?.stringValue ?? "" } == history.map(\.type))
            let healed = try await eventually(timeout: .seconds(10)) { try await client.queries.task(id)?.webhook?.failing == false }
            #expect(healed)
        }
    }
}

/// The event relay on the real Redis, in-process with a bus that keeps what it is given: marking, cursor,
/// compare-and-set, and the count of events trimmed before they were published.
@Suite("Redis: event relay", .enabled(if: TestServers.available))
struct EventRelayTests {
    /// A store on its own connection and key prefix (close its `redis` when done).
    static func store(prefix: String) async throws -> RedisTaskStore {
        let redis = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.redisURL), logger: Harness.logger)
        var settings = RedisTaskStore.Settings()
        settings.keys = RedisKeys(prefix: TestServers.uniqueName(prefix) + ":")
        return RedisTaskStore(redis: redis, settings: settings)
    }

    /// Deletes what a test task left under its store's own prefix: the task's keys, checkpoints `checkpoints`, its bucket's
    /// indexes, and `more`.
    static func deleteTask(
        _ id: String, in store: RedisTaskStore, checkpoints: ClosedRange<Int64> = 0...0, more: [String] = []
    ) async throws {
        let keys = store.settings.keys
        let bucket = keys.bucket(of: id)
        let taskKeys =
            [keys.task(id), keys.events(id), keys.budget(id), keys.outbox(id)] + checkpoints.map { keys.checkpoint(id, seq: $0) }
        let bucketKeys = [
            keys.eventsPending(bucket: bucket), keys.outboxIndex(bucket: bucket), keys.index(bucket: bucket, status: "queued"),
            keys.webhooksDue(bucket: bucket),
        ]
        _ = try await store.redis.send(RedisCommand("DEL", arguments: taskKeys + bucketKeys + more))
    }

    /// A store as ``store(prefix:)`` with one new `report` task submitted (its id made from `name`).
    /// Claims step `seq` of the `report` task `id` as `worker` and commits it as `next` to the same step, carrying
    /// `settled` (the event published for the step before) when given.
    static func runStep(_ seq: Int64, of id: String, in store: RedisTaskStore, worker: String, settled: InlineEvent? = nil)
        async throws -> CommitOutcome
    {
        let message = StepMessage(task: id, agent: "report", step: "start", seq: seq, branch: 0, attempt: 1)
        guard case .run(let claimed) = try await store.claim(message, worker: worker, leaseMilliseconds: 10_000) else {
            Issue.record("seq \(seq) was not claimed")
            return .fenced
        }
        var next = message
        next.seq += 1
        var commit = Commit(
            task: id, token: claimed.token, seq: seq, kind: .next(step: "start"), stateJSON: "{\"n\":\(seq + 1)}",
            next: .step(next, queue: "default"))
        commit.settledEvent = settled
        return try await store.commit(commit)
    }

    static func storeWithTask(prefix: String, name: String) async throws -> (store: RedisTaskStore, id: String) {
        let store = try await store(prefix: prefix)
        let id = TestServers.uniqueName(name)
        _ = try await store.submit(
            NewTask(id: id, agent: "report", inputJSON: "{}", stateJSON: "{}", firstStep: "start", queue: "default", limits: BudgetLimits())
        )
        return (store, id)
    }

    @Test func theRelayPublishesInOrderAdvancesItsCursorAndCountsTrimmedEvents() async throws {
        let (store, id) = try await Self.storeWithTask(prefix: "bt-relay", name: "relay")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let keys = store.settings.keys
        let bucket = keys.bucket(of: id)
        _ = try await store.control(task: id, action: "pause", reason: "test", actor: "test")
        _ = try await store.control(task: id, action: "resume", reason: "test", actor: "test")
        // Each script that appended an event marked the task.
        #expect(try await redis.send("ZSCORE", keys.eventsPending(bucket: bucket), id).string != nil)

        let bus = CapturingBus()
        let relay = EventRelay(store: store, bus: bus, logger: Harness.logger)
        #expect(try await relay.relay() == 3)
        let first = bus.messages.withLock { $0 }
        #expect(first.map(\.routingKey) == ["report.\(id).submitted", "report.\(id).paused", "report.\(id).resumed"])
        #expect(first.allSatisfy { $0.exchange == Topology.eventsExchange })
        let history = try await TaskQueries(store: store).history(id)
        #expect(try await redis.send("HGET", keys.task(id), "events_cursor").string == history.last?.id)
        #expect(try await redis.send("ZSCORE", keys.eventsPending(bucket: bucket), id).string == nil)
        #expect(try await relay.relay() == 0)

        // A relay that fell behind past the cap: 5 more events, the stream cut to 2 (3 never published).
        for n in 0..<5 {
            try await redis.send(
                RedisCommand(
                    "XADD",
                    arguments: [
                        keys.events(id), "MAXLEN", "=", 2, "*", "type", "progress", "seq", 0, "branch", 0, "step", "s", "at", n,
                        "data", "{}",
                    ]))
        }
        try await redis.send("ZADD", keys.eventsPending(bucket: bucket), 0, id)
        #expect(try await relay.relay() == 2)
        #expect(try await redis.send("HGET", keys.task(id), "events_published").string == "8")
        #expect(bus.messages.withLock { $0.count } == 5)

        // The cursor is a compare-and-set: an advance from a cursor another relay moved writes nothing.
        let cursor = try await redis.send("HGET", keys.task(id), "events_cursor").string ?? ""
        let moved = try await redis.evalSHA(
            EventRelay.advanceScript,
            keys: [keys.task(id), keys.events(id), keys.eventsPending(bucket: bucket), keys.webhooksDue(bucket: bucket)],
            args: [id, "0-1", "9-9", 1, "0"])
        #expect(moved.string == "moved")
        #expect(try await redis.send("HGET", keys.task(id), "events_cursor").string == cursor)
        try await Self.deleteTask(id, in: store)
    }

    /// The hot path publishes its own event: a step commit of a task whose earlier events are all published returns
    /// its event (marked a lease ahead, so the relay leaves it alone); the worker's `eventsPublished` moves the cursor.
    /// While a task has unpublished events its commits return none, and the relay publishes everything in order.
    @Test func aStepCommitReturnsItsEventForTheWorkerToPublish() async throws {
        let (store, id) = try await Self.storeWithTask(prefix: "bt-inline", name: "inline")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let keys = store.settings.keys
        let bucket = keys.bucket(of: id)
        let bus = CapturingBus()
        let relay = EventRelay(store: store, bus: bus, logger: Harness.logger)
        func step(_ seq: Int64) async throws -> CommitOutcome {
            try await Self.runStep(seq, of: id, in: store, worker: "w-inline")
        }
        let first = try await step(0)
        // `submitted` and `started` were due for the relay and not taken by it: the first commit takes them over, to go
        // out first and in order with its own event, and the cursor moves past all three.
        guard case .committed("queued", 1, _, let takeover?) = first else {
            Issue.record("unexpected \(first)")
            return
        }
        #expect(takeover.earlier.map(\.routingKey) == ["report.\(id).submitted", "report.\(id).started"])
        #expect(takeover.messages.map(\.routingKey).last == "report.\(id).step_committed")
        #expect(takeover.count == 3 && takeover.cursorBefore == "")
        #expect(try await relay.relay() == 0)
        await store.eventsPublished([takeover])
        let cursor = try await redis.send("HGET", keys.task(id), "events_cursor").string ?? ""
        #expect(cursor == takeover.streamID)
        #expect(try await redis.send("HGET", keys.task(id), "events_published").string == "3")

        let beforeCommit = Int64(Date().timeIntervalSince1970 * 1000)
        guard case .committed("queued", 2, _, let event?) = try await step(1) else {
            Issue.record("the commit returned no event")
            return
        }
        #expect(event.message.routingKey == "report.\(id).step_committed")
        #expect(event.message.exchange == Topology.eventsExchange)
        #expect(event.cursorBefore == cursor)
        let body = try JSONValue.parse(Array(event.message.body.utf8))
        #expect(body["seq"]?.intValue == 2)
        #expect(body["id"]?.stringValue == "evt_\(id)_2_\(event.streamID)")
        #expect(body["status"]?.stringValue == "queued")
        // Marked a lease ahead: the relay does not take it while its worker publishes.
        let score = Int64(try await redis.send("ZSCORE", keys.eventsPending(bucket: bucket), id).string ?? "") ?? 0
        #expect(score >= beforeCommit + 9_000, "marked 10 s after the commit (Redis time)")
        // While the mark is ahead the relay leaves the task alone (checked only while it is: a loaded CI box may take
        // seconds to get here).
        if Int64(Date().timeIntervalSince1970 * 1000) < score - 2_000 { #expect(try await relay.relay() == 0) }
        await store.eventsPublished([event])
        #expect(try await redis.send("HGET", keys.task(id), "events_cursor").string == event.streamID)
        #expect(try await redis.send("ZSCORE", keys.eventsPending(bucket: bucket), id).string == nil)

        // A worker that dies before `eventsPublished`: the next commit returns no event; when the mark comes due the
        // relay publishes both, in order.
        guard case .committed("queued", 3, _, let unpublished?) = try await step(2) else {
            Issue.record("the commit returned no event")
            return
        }
        guard case .committed("queued", 4, _, nil) = try await step(3) else {
            Issue.record("a commit behind an unpublished event returned one")
            return
        }
        _ = try await redis.send("ZADD", keys.eventsPending(bucket: bucket), 0, id)
        #expect(try await relay.relay() == 2)
        let relayed = bus.messages.withLock { $0 }
        #expect(relayed.map(\.routingKey) == ["report.\(id).step_committed", "report.\(id).step_committed"])
        #expect(relayed.first?.body.contains(unpublished.streamID) == true)
        #expect(try await redis.send("ZSCORE", keys.eventsPending(bucket: bucket), id).string == nil)
        try await Self.deleteTask(id, in: store, checkpoints: 0...4)
    }

    /// In memory as on Redis: a second delivery of a step to the worker that holds its unexpired lease is a copy,
    /// even before that worker's first heartbeat (a copy that ran would run the step's side effects twice); to
    /// another worker the lease of a holder without a heartbeat counts as dead.
    @Test func aWorkersOwnLeaseHoldsAgainstItsOwnSecondClaimWithoutAHeartbeat() async throws {
        let (store, id) = try await Self.storeWithTask(prefix: "bt-ownlease", name: "ownlease")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let message = StepMessage(task: id, agent: "report", step: "start", seq: 0, branch: 0, attempt: 1)
        let worker = TestServers.uniqueName("w-own")
        guard case .run(let first) = try await store.claim(message, worker: worker, leaseMilliseconds: 60_000) else {
            Issue.record("the first claim did not run")
            return
        }
        let again = try await store.claim(message, worker: worker, leaseMilliseconds: 60_000)
        if case .leased(let holder) = again {
            #expect(holder == worker)
        } else {
            Issue.record("the second claim was not refused as leased: \(again)")
        }
        guard case .run(let second) = try await store.claim(message, worker: worker + "-other", leaseMilliseconds: 60_000) else {
            Issue.record("another worker did not take the lease of a holder without a heartbeat")
            return
        }
        #expect(second.token == first.token + 1)
        try await Self.deleteTask(id, in: store)
    }

    /// The stalled-task sweep republishes a running task whose lease expired only when its holder vanished: a holder that
    /// still heartbeats (alive, but stalled past its lease) gets `worker.stale_after` more; a silent one, or one whose
    /// lease expired longer ago than that, does not.
    @Test func theStalledSweepSparesAHolderThatStillHeartbeats() async throws {
        let (base, id) = try await Self.storeWithTask(prefix: "bt-stalled", name: "stalled")
        let redis = base.redis
        defer { Task { await redis.close() } }
        var settings = base.settings
        // Long enough that a loaded test machine cannot age the heartbeat past it between two lines.
        settings.workerStaleMilliseconds = 60_000
        let store = RedisTaskStore(redis: redis, settings: settings)
        let keys = settings.keys
        let worker = TestServers.uniqueName("w-stalled")
        func redisNow() async throws -> Int64 {
            let time = try await redis.send("TIME").array?.compactMap { $0.string.flatMap { Int64($0) } } ?? []
            try #require(time.count == 2)
            return time[0] * 1000 + time[1] / 1000
        }
        func beat() async throws { _ = try await redis.send("ZADD", keys.workers, try await redisNow(), worker) }
        let message = StepMessage(task: id, agent: "report", step: "start", seq: 0, branch: 0, attempt: 1)
        try await beat()
        guard case .run = try await store.claim(message, worker: worker, leaseMilliseconds: 50) else {
            Issue.record("the claim did not run")
            return
        }
        try await Task.sleep(for: .milliseconds(200))
        // The lease has expired; its holder heartbeats.
        try await beat()
        #expect(try await store.republishStalled(task: id, actor: "test") == ["live", "running"])
        #expect(try await redis.send("HGET", keys.task(id), "lease_owner").string == worker)

        // The holder falls silent: its task is stalled.
        _ = try await redis.send("ZREM", keys.workers, worker)
        #expect(try await store.republishStalled(task: id, actor: "test") == ["republished", "queued"])
        #expect(try await redis.send("HGET", keys.task(id), "status").string == "queued")

        // A holder that heartbeats, but whose lease expired longer ago than worker.stale_after, is stalled too.
        try await beat()
        guard case .run = try await store.claim(message, worker: worker, leaseMilliseconds: 50) else {
            Issue.record("the second claim did not run")
            return
        }
        _ = try await redis.send("HSET", keys.task(id), "lease_until", try await redisNow() - 61_000)
        try await beat()
        _ = try await redis.send("ZREM", keys.eventsPending(bucket: keys.bucket(of: id)), id)
        #expect(try await store.republishStalled(task: id, actor: "test") == ["republished", "queued"])
        // The events the sweep appended marked the task for the relay (events pending is still the script's last key).
        #expect(try await redis.send("ZSCORE", keys.eventsPending(bucket: keys.bucket(of: id)), id).string != nil)
        #expect(try await redis.send("ZSCORE", keys.workers, id).string == nil)

        try await Self.deleteTask(id, in: store, more: [keys.workers])
    }

    /// The next commit of a task carries the event its worker published for the step before (``Commit/settledEvent``): it
    /// moves the relay cursor past it — a compare-and-set, so a stale one changes nothing — and, the task's events
    /// being all published then, returns its own event.
    @Test func aCommitCarriesTheConfirmedEventOfTheStepBefore() async throws {
        let (store, id) = try await Self.storeWithTask(prefix: "bt-settled", name: "settled")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let keys = store.settings.keys
        let bucket = keys.bucket(of: id)
        #expect(store.carriesSettledPublishes)
        let relay = EventRelay(store: store, bus: CapturingBus(), logger: Harness.logger)
        func step(_ seq: Int64, settled: InlineEvent? = nil) async throws -> CommitOutcome {
            try await Self.runStep(seq, of: id, in: store, worker: "w-settled", settled: settled)
        }
        guard case .committed("queued", 1, _, let event0?) = try await step(0) else {
            Issue.record("the first commit did not take over the task's first events")
            return
        }
        #expect(try await relay.relay() == 0)
        await store.eventsPublished([event0])
        guard case .committed("queued", 2, _, let event1?) = try await step(1) else {
            Issue.record("the commit of seq 1 returned no event")
            return
        }
        let published = Int(try await redis.send("HGET", keys.task(id), "events_published").string ?? "") ?? 0

        // Seq 2 carries seq 1's confirmed event.
        guard case .committed("queued", 3, _, let event2?) = try await step(2, settled: event1)
        else {
            Issue.record("the commit that carried the settled event returned no event of its own")
            return
        }
        #expect(try await redis.send("HGET", keys.task(id), "events_cursor").string == event1.streamID)
        #expect(Int(try await redis.send("HGET", keys.task(id), "events_published").string ?? "") == published + 1)
        #expect(event2.cursorBefore == event1.streamID)

        // A stale carried event (its expected cursor is behind) moves nothing; the unpublished event2 keeps the
        // task marked under its inline lease (10 s), so this commit returns no event (the relay's). Unless this test
        // was held up past that lease (a loaded box runs hundreds of tests on two cores): then the commit rightly takes
        // event2 over and returns its own event after it.
        let time = try await redis.send("TIME").array ?? []
        let now = (Int64(time.first?.string ?? "") ?? 0) * 1000 + (Int64(time.last?.string ?? "") ?? 0) / 1000
        let lease = Int64(try await redis.send("ZSCORE", keys.eventsPending(bucket: bucket), id).string ?? "") ?? 0
        let outcome = try await step(3, settled: event1)
        if lease - now > 2000 {
            guard case .committed("queued", 4, _, nil) = outcome else {
                Issue.record("a commit behind an unpublished event returned one: \(outcome)")
                return
            }
        } else {
            guard case .committed("queued", 4, _, let taken?) = outcome, taken.earlier.count == 1 else {
                Issue.record("a commit after the inline lease lapsed did not take the unpublished event over: \(outcome)")
                return
            }
        }
        #expect(try await redis.send("HGET", keys.task(id), "events_cursor").string == event1.streamID)
        #expect(try await redis.send("ZSCORE", keys.eventsPending(bucket: bucket), id).string != nil)
        try await Self.deleteTask(id, in: store, checkpoints: 0...4)
        _ = try await redis.send("ZREM", keys.eventsPending(bucket: bucket), id)
    }

    /// The commit packs its event's fields into one string joined by NUL bytes, unless a field holds one (a progress
    /// message an agent wrote may): then it answers them as an array. Either way the worker gets the event whole.
    @Test func anInlineEventWithANulInAFieldComesBackWhole() async throws {
        let (store, id) = try await Self.storeWithTask(prefix: "bt-packed", name: "packed")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let keys = store.settings.keys
        let bucket = keys.bucket(of: id)
        func step(_ seq: Int64) async throws -> CommitOutcome {
            try await Self.runStep(seq, of: id, in: store, worker: "w-packed")
        }
        func progressMessage(_ event: InlineEvent) throws -> String? {
            let body = try JSONSerialization.jsonObject(with: Data(event.message.body.utf8)) as? [String: Any]
            return (body?["progress"] as? [String: Any])?["message"] as? String
        }
        // A plain message: the packed reply.
        _ = try await redis.send("HSET", keys.task(id), "progress_fraction", "0.25", "progress_message", "one, two")
        guard case .committed("queued", 1, _, let first?) = try await step(0) else {
            Issue.record("the first commit returned no event")
            return
        }
        #expect(try progressMessage(first) == "one, two")
        #expect(first.message.routingKey == "report.\(id).step_committed")
        await store.eventsPublished([first])
        // A message with a NUL byte: the array reply, the same event.
        _ = try await redis.send("HSET", keys.task(id), "progress_message", "a\u{0}b")
        guard case .committed("queued", 2, _, let second?) = try await step(1) else {
            Issue.record("the commit behind a NUL byte returned no event")
            return
        }
        #expect(try progressMessage(second) == "a\u{0}b")
        #expect(second.message.routingKey == "report.\(id).step_committed")
        #expect(second.cursorBefore == first.streamID)
        await store.eventsPublished([second])
        try await Self.deleteTask(id, in: store, checkpoints: 0...2)
        _ = try await redis.send("ZREM", keys.eventsPending(bucket: bucket), id)
    }

    /// An unconfirmed publish: only the confirmed prefix advances the cursor, and the next round re-publishes the
    /// rest, so the consumer sees every event in order (with at most the unconfirmed tail twice).
    @Test func anUnconfirmedTailIsPublishedAgainInOrder() async throws {
        let (store, id) = try await Self.storeWithTask(prefix: "bt-relay-nack", name: "nack")
        let redis = store.redis
        defer { Task { await redis.close() } }
        for _ in 0..<3 {
            _ = try await store.control(task: id, action: "pause", reason: "test", actor: "test")
            _ = try await store.control(task: id, action: "resume", reason: "test", actor: "test")
        }
        let bus = FlakyBus(confirmFirst: 3)
        let relay = EventRelay(store: store, bus: bus, logger: Harness.logger)
        #expect(try await relay.relay() == 3)
        #expect(try await relay.relay() == 4)
        #expect(try await relay.relay() == 0)
        let history = try await TaskQueries(store: store).history(id)
        let confirmed = bus.confirmed.withLock { $0 }
        #expect(confirmed.map(\.routingKey) == history.map { "report.\(id).\($0.type)" })
        #expect(bus.attempts.withLock { $0 } == 7 + 4)
        try await Self.deleteTask(id, in: store)
    }

    /// A webhook that fails for its whole retry schedule is disabled for the task (nothing retried for ever); the
    /// view says why, and every attempt of the event carried the same `webhook-id`.
    @Test(.timeLimit(.minutes(4))) func aWebhookFailingPastItsScheduleIsDisabled() async throws {
        let receiver = try WebhookReceiver { _, _ in 500 }
        defer { receiver.stop() }
        let store = try await Self.store(prefix: "bt-hook")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let id = TestServers.uniqueName("hook")
        let notify = #"{"webhook":"http://127.0.0.1:\#(receiver.port)/h"}"#
        _ = try await store.submit(
            NewTask(
                id: id, agent: "report", inputJSON: "{}", stateJSON: "{}", firstStep: "start", queue: "default", limits: BudgetLimits(),
                notifyJSON: notify))
        #expect(try await EventRelay(store: store, bus: CapturingBus(), logger: Harness.logger).relay() == 1)
        var webhooks = WebhookSettings()
        webhooks.secret = "s3cret"
        webhooks.allowHosts = ["127.0.0.1"]
        webhooks.retrySchedule = [.milliseconds(10), .milliseconds(10)]
        let sender = WebhookSender(store: store, settings: webhooks, logger: Harness.logger)
        var view: TaskView?
        // (A generous wait: a loaded box running the whole suite on two cores has held this loop up for 13 s.)
        let disabled = try await eventually(timeout: .seconds(60)) {
            try await sender.deliver()
            view = try await TaskQueries(store: store).task(id)
            return view?.webhook?.disabled != nil
        }
        #expect(disabled, "not disabled: \(String(describing: view?.webhook))")
        #expect(view?.webhook?.disabled?.contains("HTTP 500") == true)
        #expect(receiver.received.count == 3)
        #expect(Set(receiver.received.compactMap { $0.headers["webhook-id"] }).count == 1)
        try await sender.deliver()
        #expect(receiver.received.count == 3)
        try await Self.deleteTask(id, in: store)
    }
}

/// A bus that confirms the first `confirmFirst` messages it is ever given and refuses the rest of that first
/// publish; later publishes are confirmed.
final class FlakyBus: MessageBus {
    let confirmFirst: Int
    let confirmed = Mutex<[OutboxMessage]>([])
    let attempts = Mutex(0)
    private let calls = Mutex(0)

    init(confirmFirst: Int) { self.confirmFirst = confirmFirst }

    func publish(_ messages: [OutboxMessage]) async -> [(any Error)?] {
        let call = calls.withLock {
            $0 += 1
            return $0
        }
        attempts.withLock { $0 += messages.count }
        return messages.enumerated().map { index, message in
            if call == 1 && index >= confirmFirst { return BatonError(.internalError, "not confirmed (test)") }
            confirmed.withLock { $0.append(message) }
            return nil
        }
    }
}

/// A consumer of `baton.events` on a test's vhost: an exclusive queue bound with one routing key, every delivery's
/// routing key and JSON body kept in arrival order (and acked).
final class EventsListener: Sendable {
    let connection: AMQPConnection
    let heard = Mutex<[(routingKey: String, body: JSONValue)]>([])
    private let collector = Mutex<Task<Void, any Error>?>(nil)

    private init(connection: AMQPConnection) { self.connection = connection }

    static func start(_ servers: WaitServers, routingKey: String, prefetch: UInt16 = 100) async throws -> EventsListener {
        let connection = try await AMQPConnection.connect(
            try AMQPConfiguration(url: servers.amqpURL, connectionName: "baton-events-test"), logger: Harness.logger)
        let listener = EventsListener(connection: connection)
        let channel = try await connection.openChannel(prefetch: prefetch)
        let queue = TestServers.uniqueName("events-listener")
        try await channel.declareQueue(queue, durable: false, exclusive: true, autoDelete: true)
        try await channel.bindQueue(queue, exchange: Topology.eventsExchange, routingKey: routingKey)
        let consumer = try await channel.consume(queue: queue, exclusive: true)
        listener.collector.withLock {
            $0 = Task {
                for try await delivery in consumer.deliveries {
                    let body = (try? JSONValue.parse(delivery.body)) ?? .null
                    listener.heard.withLock { $0.append((delivery.routingKey, body)) }
                    try await channel.ack(delivery)
                }
            }
        }
        return listener
    }

    /// The bodies heard so far.
    var bodies: [JSONValue] { heard.withLock { $0.map(\.body) } }

    func cancel() { collector.withLock { $0?.cancel() } }

    func stop() async {
        cancel()
        await connection.close()
    }
}
