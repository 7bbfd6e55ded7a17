import Foundation
import Logging
import RedisClient
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Settings of webhook delivery (the `webhooks.*` keys; docs/design-decisions.md "Events and webhooks").
public struct WebhookSettings: Sendable {
    /// The signing secret (`webhooks.secret`): `whsec_<base64>` (the Standard Webhooks form: the key is the
    /// decoded bytes) or any other text (the key is its UTF-8). Without one, deliveries fail (visibly) until set.
    public var secret: String?
    /// The secret being rotated out (`webhooks.previous_secret`): while set, every delivery carries both
    /// signatures.
    public var previousSecret: String?
    /// Hosts (names or IP literals, as the URL writes them) allowed even though they are loopback or private.
    public var allowHosts: [String] = []
    /// Delays between the attempts of one event, jittered by ±10 %: about three days in all. After the last, the
    /// task's webhook is disabled (like a 410), which the task view shows.
    public var retrySchedule: [Duration] = WebhookSettings.defaultSchedule
    /// One request's time limit.
    public var timeout: Duration = .seconds(10)
    /// Tasks whose webhooks one worker delivers at once.
    public var concurrency = 16

    public static let defaultSchedule: [Duration] = [
        .seconds(5), .seconds(300), .seconds(1800), .seconds(7200), .seconds(18_000), .seconds(36_000), .seconds(36_000),
        .seconds(36_000), .seconds(36_000), .seconds(43_200), .seconds(43_200),
    ]

    public init() {}

    /// The HMAC keys, newest first.
    var keys: [[UInt8]] {
        [secret, previousSecret].compactMap { $0 }.filter { !$0.isEmpty }.map(Self.key)
    }

    static func key(_ secret: String) -> [UInt8] {
        if secret.hasPrefix("whsec_"), let data = Data(base64Encoded: String(secret.dropFirst(6))) { return Array(data) }
        return Array(secret.utf8)
    }
}

/// Standard Webhooks signing: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per key.
public enum WebhookSignature {
    public static func header(id: String, timestamp: Int64, body: String, keys: [[UInt8]]) -> String {
        let signed = Array("\(id).\(timestamp).\(body)".utf8)
        return keys.map { "v1," + Data(SHA256.hmac(key: $0, message: signed)).base64EncodedString() }.joined(separator: " ")
    }
}

/// Which webhook targets are refused: loopback, private, link-local and unspecified addresses, unless the
/// host is allow-listed (`webhooks.allow_hosts`).
public enum WebhookTarget {
    /// Checks a webhook URL's shape (at submit): http or https with a host.
    public static func validate(_ text: String) throws(BatonError) {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty
        else {
            throw BatonError(
                .invalidMessage, "notify.webhook must be an http or https URL with a host; got \"\(text)\"", field: "notify.webhook")
        }
    }

    /// Nil when `url` may be called, else why not (naming the setting to change).
    static func refusal(_ url: URL, allowHosts: [String]) async -> String? {
        guard let host = url.host?.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]")) else {
            return "the webhook URL has no host"
        }
        if allowHosts.contains(where: { $0.lowercased() == host }) { return nil }
        let addresses = await resolve(host)
        if addresses.isEmpty { return "the webhook host \(host) does not resolve" }
        if let bad = addresses.first(where: isPrivate) {
            return "the webhook host \(host) is a loopback or private address (\(bad)): add it to webhooks.allow_hosts to allow it"
        }
        return nil
    }

    static func isPrivate(_ address: String) -> Bool {
        let a = address.lowercased()
        if a.contains(":") {
            if a == "::1" || a == "::" || a.hasPrefix("fe80:") || a.hasPrefix("fc") || a.hasPrefix("fd") { return true }
            if a.hasPrefix("::ffff:") { return isPrivate(String(a.dropFirst(7))) }
            return false
        }
        let octets = a.split(separator: ".").compactMap { Int($0) }
        guard octets.count == 4 else { return true }
        switch (octets[0], octets[1]) {
        case (0, _), (10, _), (127, _), (169, 254), (192, 168): return true
        case (172, 16...31), (100, 64...127): return true
        default: return false
        }
    }

    /// The host's addresses (numeric), resolved off the cooperative pool (getaddrinfo blocks).
    static func resolve(_ host: String) async -> [String] {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var hints = addrinfo()
                hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
                var result: UnsafeMutablePointer<addrinfo>?
                guard getaddrinfo(host, nil, &hints, &result) == 0 else {
                    continuation.resume(returning: [])
                    return
                }
                defer { freeaddrinfo(result) }
                var out: [String] = []
                var cursor = result
                while let info = cursor {
                    var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                    if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST)
                        == 0
                    {
                        out.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
                    }
                    cursor = info.pointee.ai_next
                }
                continuation.resume(returning: out)
            }
        }
    }
}

/// Delivers every task's events to its `notify.webhook`, signed, in stream order, through Redis: the event
/// relay marks a task in its bucket's `webhooks` zset (scored by when it is due); any worker claims due tasks
/// (re-scored a lease ahead), POSTs from the task's webhook cursor, and records the outcome with a
/// compare-and-set. A failure schedules the next attempt (``WebhookSettings/retrySchedule`` or `Retry-After`)
/// and shows in the task view; HTTP 410 disables the endpoint for that task. A step never waits for a webhook.
final class WebhookSender: Sendable {
    let store: RedisTaskStore
    let settings: WebhookSettings
    let logger: Logger
    let session: URLSession
    let eventsPerRound = 50
    /// Tasks being delivered to now (``run(every:isStopped:)``).
    private let inFlight = Atomic<Int>(0)

    static let readScript = RedisScript(Scripts.webhookRead)
    static let advanceScript = RedisScript(Scripts.webhookAdvance)

    init(store: RedisTaskStore, settings: WebhookSettings, logger: Logger) {
        self.store = store
        self.settings = settings
        self.logger = logger
        let configuration = URLSessionConfiguration.ephemeral
        let seconds = Double(Self.milliseconds(settings.timeout)) / 1000
        configuration.timeoutIntervalForRequest = seconds
        configuration.timeoutIntervalForResource = seconds * 2
        configuration.httpMaximumConnectionsPerHost = 4
        self.session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
    }

    /// Redirects are not followed: a redirect could lead to a refused (private) target.
    final class NoRedirects: NSObject, URLSessionTaskDelegate, Sendable {
        func urlSession(
            _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
            newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void
        ) {
            completionHandler(nil)
        }
    }

    var keys: RedisKeys { store.settings.keys }
    var leaseMilliseconds: Int64 { Self.milliseconds(settings.timeout) * Int64(eventsPerRound) + 30_000 }

    static let claimScript = RedisScript(Scripts.claimDue)

    /// Delivers until `isStopped`: keeps up to ``WebhookSettings/concurrency`` tasks in flight, claiming only as
    /// many due tasks as there are free slots (so a slow receiver holds one slot, never the others' deliveries),
    /// and polls every `interval` while nothing is due or every slot is busy.
    func run(every interval: Duration, isStopped: @escaping @Sendable () -> Bool) async {
        await withDiscardingTaskGroup { group in
            while !isStopped() && !Task.isCancelled {
                let free = settings.concurrency - inFlight.load(ordering: .relaxed)
                var ids: [String] = []
                if free > 0 {
                    do { ids = try await claim(limit: free) } catch {
                        logger.debug("webhook claim failed; retrying next round", metadata: ["error": "\(error)"])
                    }
                }
                for id in ids {
                    inFlight.add(1, ordering: .relaxed)
                    group.addTask {
                        defer { self.inFlight.subtract(1, ordering: .relaxed) }
                        do { try await self.deliver(task: id) } catch {
                            self.logger.warning("webhook round failed", metadata: ["task.id": "\(id)", "error": "\(error)"])
                        }
                    }
                }
                if ids.isEmpty { try? await Task.sleep(for: interval) }
            }
        }
    }

    /// Claims up to `limit` due tasks over all buckets (starting at a random bucket).
    func claim(limit: Int) async throws -> [String] {
        let reply = try await store.redis.evalSHA(
            Self.claimScript, keys: (0..<keys.bucketCount).map { keys.webhooksDue(bucket: $0) },
            args: [limit, leaseMilliseconds, Int.random(in: 0..<keys.bucketCount)])
        return (reply.array ?? []).compactMap(\.string)
    }

    /// One round (tests): claims up to ``WebhookSettings/concurrency`` due tasks and delivers to each; returns how
    /// many.
    @discardableResult
    func deliver() async throws -> Int {
        let ids = try await claim(limit: settings.concurrency)
        await withDiscardingTaskGroup { group in
            for id in ids {
                group.addTask {
                    do { try await self.deliver(task: id) } catch {
                        self.logger.warning("webhook round failed", metadata: ["task.id": "\(id)", "error": "\(error)"])
                    }
                }
            }
        }
        return ids.count
    }

    enum Attempt {
        case delivered
        case gone(String)
        case failed(String, retryAfter: Duration?)
    }

    func deliver(task id: String) async throws {
        let task = keys.of(id)
        let reply = try await store.redis.evalSHA(
            Self.readScript, keys: [task.task, task.events, task.budget], args: [eventsPerRound])
        let parts = reply.array ?? []
        guard parts.count >= 11 else { return }
        let info = EventTaskInfo(id: id, parts: parts)
        let start = parts[0].string ?? ""
        var attempts = Int(parts[9].string ?? "") ?? 0
        let disabled = parts[10].string ?? ""
        let events = StreamEvent.entries(parts[8])
        func advance(_ cursor: String, _ outcome: String, error: String = "", delay: Int64 = 0, delivered: Int = 0) async throws {
            let bucket = keys.bucket(of: id)
            try await store.redis.evalSHA(
                Self.advanceScript, keys: [task.task, task.events, keys.webhooksDue(bucket: bucket)],
                args: [id, start, cursor, outcome, error, delay, attempts, delivered])
        }
        guard let target = info.webhookURL, disabled.isEmpty else {
            try await advance(events.last?.streamID ?? start, disabled.isEmpty ? "ok" : "gone", error: disabled)
            return
        }
        var cursor = start
        var delivered = 0
        for event in events {
            guard Self.wants(info.notify?.events, event.type) else {
                cursor = event.streamID
                continue
            }
            switch await post(target, task: info, event: event) {
            case .delivered:
                BatonMetrics.webhook("delivered")
                cursor = event.streamID
                delivered += 1
            case .gone(let why):
                BatonMetrics.webhook("gone")
                logger.warning("webhook_failed: the endpoint answered 410 Gone; disabled for this task", metadata: ["task.id": "\(id)"])
                try await advance(cursor, "gone", error: why, delivered: delivered)
                return
            case .failed(let why, let retryAfter):
                attempts += 1
                if attempts > settings.retrySchedule.count {
                    // The endpoint failed for the whole schedule (about three days): disabled for this task, like a 410.
                    BatonMetrics.webhook("gave_up")
                    let text = "disabled after \(attempts) failed attempts (webhooks.retry_schedule): \(why)"
                    logger.warning(
                        "webhook_failed: endpoint disabled for the task",
                        metadata: ["task.id": "\(id)", "event.id": "\(EventMessage.id(task: id, event))", "error": "\(why)"])
                    try await advance(cursor, "gone", error: text, delivered: delivered)
                    return
                }
                BatonMetrics.webhook("failed")
                let delay = retryAfter ?? Self.jittered(settings.retrySchedule[attempts - 1])
                logger.warning(
                    "webhook_failed", metadata: ["task.id": "\(id)", "attempt": "\(attempts)", "error": "\(why)", "retry_in": "\(delay)"])
                try await advance(cursor, "retry", error: why, delay: Self.milliseconds(delay), delivered: delivered)
                return
            }
        }
        attempts = 0
        try await advance(cursor, "ok", delivered: delivered)
    }

    /// `notify.events` filter: nil or empty takes every event; a name is an event type, `status` (every type
    /// but `progress`) or `progress`.
    static func wants(_ filter: [String]?, _ type: String) -> Bool {
        guard let filter, !filter.isEmpty else { return true }
        return filter.contains { $0 == type || $0 == "*" || ($0 == "status" && type != "progress") }
    }

    static func jittered(_ delay: Duration) -> Duration {
        let ms = Double(Self.milliseconds(delay))
        return .milliseconds(Int64(ms * Double.random(in: 0.9...1.1)))
    }

    func post(_ target: String, task: EventTaskInfo, event: StreamEvent) async -> Attempt {
        guard let url = URL(string: target) else { return .gone("notify.webhook is not a URL: \(target)") }
        if let refusal = await WebhookTarget.refusal(url, allowHosts: settings.allowHosts) { return .failed(refusal, retryAfter: nil) }
        let keys = settings.keys
        guard !keys.isEmpty else {
            return .failed("no signing secret: set webhooks.secret (BATON_WEBHOOKS_SECRET) on the workers", retryAfter: nil)
        }
        let body = EventMessage.body(task: task, event)
        let id = EventMessage.id(task: task.id, event)
        let timestamp = Int64(Date().timeIntervalSince1970)
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.httpBody = Data(body.utf8)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("baton-webhooks/1", forHTTPHeaderField: "User-Agent")
        request.setValue(id, forHTTPHeaderField: "webhook-id")
        request.setValue(String(timestamp), forHTTPHeaderField: "webhook-timestamp")
        request.setValue(
            WebhookSignature.header(id: id, timestamp: timestamp, body: body, keys: keys), forHTTPHeaderField: "webhook-signature")
        do {
            let (_, response) = try await session.data(for: request)
            guard let http = response as? HTTPURLResponse else { return .failed("no HTTP response", retryAfter: nil) }
            switch http.statusCode {
            case 200..<300: return .delivered
            case 410: return .gone("the endpoint answered 410 Gone: webhooks disabled for this task")
            default:
                let retryAfter = (http.value(forHTTPHeaderField: "Retry-After")).flatMap(Self.retryAfter)
                return .failed("HTTP \(http.statusCode) from \(url.host ?? target)", retryAfter: retryAfter)
            }
        } catch {
            return .failed("\(url.host ?? target): \(error.localizedDescription)", retryAfter: nil)
        }
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.wholeMilliseconds
    }

    /// `Retry-After` as seconds or an HTTP date, capped at a day.
    static func retryAfter(_ text: String) -> Duration? {
        var seconds: Double?
        if let value = Double(text.trimmingCharacters(in: .whitespaces)) {
            seconds = value
        } else {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
            seconds = formatter.date(from: text).map { $0.timeIntervalSinceNow }
        }
        // "nan" parses as a Double; it is no delay (and would trap when converted).
        guard let seconds, !seconds.isNaN else { return nil }
        return .milliseconds(Int64(min(max(seconds, 0), 86_400) * 1000))
    }
}
