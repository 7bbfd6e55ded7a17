import BatonExamples
import BatonTesting
import Foundation
import Testing

@testable import Baton

/// HMAC, the Standard Webhooks signature, the target rules and the event JSON: no servers needed.
@Suite("Webhooks")
struct WebhookTests {
    static func hex(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        return out
    }

    /// RFC 4231 test cases 1, 2, 3, 4, 6 and 7 (case 5 checks a truncated output).
    @Test(arguments: [
        (
            String(repeating: "0b", count: 20), Self.hex(Array("Hi There".utf8)),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        ),
        (
            Self.hex(Array("Jefe".utf8)), Self.hex(Array("what do ya want for nothing?".utf8)),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ),
        (
            String(repeating: "aa", count: 20), String(repeating: "dd", count: 50),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
        ),
        (
            "0102030405060708090a0b0c0d0e0f10111213141516171819", String(repeating: "cd", count: 50),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"
        ),
        (
            String(repeating: "aa", count: 131), Self.hex(Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        ),
        (
            String(repeating: "aa", count: 131),
            Self.hex(
                Array(
                    "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."
                        .utf8)),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        ),
    ])
    func hmacMatchesRFC4231(key: String, data: String, mac: String) {
        #expect(Self.hex(SHA256.hmac(key: Self.bytes(hex: key), message: Self.bytes(hex: data))) == mac)
    }

    /// The Standard Webhooks example (its reference libraries' test vector): secret, id, timestamp, body → signature.
    @Test func signatureMatchesTheStandardWebhooksExample() {
        var settings = WebhookSettings()
        settings.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        let header = WebhookSignature.header(
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: #"{"test": 2432232314}"#, keys: settings.keys)
        #expect(header == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    @Test func aRotatingSecretSignsTwice() {
        var settings = WebhookSettings()
        settings.secret = "new-secret"
        settings.previousSecret = "old-secret"
        let header = WebhookSignature.header(id: "evt_1", timestamp: 1, body: "{}", keys: settings.keys)
        let parts = header.split(separator: " ")
        #expect(parts.count == 2)
        #expect(
            parts[0] == "v1," + Data(SHA256.hmac(key: Array("new-secret".utf8), message: Array("evt_1.1.{}".utf8))).base64EncodedString())
        #expect(
            parts[1] == "v1," + Data(SHA256.hmac(key: Array("old-secret".utf8), message: Array("evt_1.1.{}".utf8))).base64EncodedString())
    }

    @Test(arguments: [
        ("127.0.0.1", true), ("10.1.2.3", true), ("172.20.0.1", true), ("192.168.1.1", true), ("169.254.169.254", true),
        ("100.64.0.1", true), ("0.0.0.0", true), ("::1", true), ("fd00::1", true), ("::ffff:127.0.0.1", true), ("93.184.216.34", false),
        ("172.32.0.1", false), ("2606:4700::1111", false),
    ])
    func privateAddressesAreRecognised(address: String, isPrivate: Bool) {
        #expect(WebhookTarget.isPrivate(address) == isPrivate)
    }

    @Test func loopbackIsRefusedUnlessAllowListed() async throws {
        let url = try #require(URL(string: "http://127.0.0.1:9/hook"))
        let refusal = await WebhookTarget.refusal(url, allowHosts: [])
        #expect(refusal?.contains("webhooks.allow_hosts") == true)
        #expect(await WebhookTarget.refusal(url, allowHosts: ["127.0.0.1"]) == nil)
    }

    @Test func submitChecksTheWebhookAndTheEventFilter() {
        var request = SubmitRequest(agent: "a", notify: .init(webhook: "ftp://x/y"))
        #expect(throws: BatonError.self) { try request.validate() }
        request.notify = .init(webhook: "https://example.com/hook", events: ["status", "progress", "succeeded"])
        #expect(throws: Never.self) { try request.validate() }
        request.notify = .init(webhook: "https://example.com/hook", events: ["statuz"])
        do {
            try request.validate()
            Issue.record("an unknown event name was accepted")
        } catch {
            #expect(error.field == "notify.events")
            #expect(error.message.contains("statuz"))
        }
    }

    /// The in-memory backend takes the same submit checks (its executor validates the request the same way).
    @Test func inMemorySubmitRefusesABadWebhookFilterAndKeepsAGoodOne() async throws {
        let harness = BatonTestHarness(registry: .examples)
        var request = SubmitRequest(
            agent: "stepchain", input: ["steps": 1], notify: .init(webhook: "https://example.com/h", events: ["nope"]))
        do {
            _ = try await harness.executor.submit(request)
            Issue.record("a bad notify.events was accepted")
        } catch let error as BatonError {
            #expect(error.field == "notify.events")
        }
        request.notify = .init(webhook: "https://example.com/h", events: ["status"])
        request.id = "hooked"
        let (hooked, _) = try await harness.executor.submit(request)
        #expect(harness.task(hooked)?.status == "queued")
    }

    @Test func theEventFilterTakesTypesAndCategories() {
        #expect(WebhookSender.wants(nil, "progress"))
        #expect(WebhookSender.wants(["status"], "succeeded"))
        #expect(!WebhookSender.wants(["status"], "progress"))
        #expect(WebhookSender.wants(["progress"], "progress"))
        #expect(!WebhookSender.wants(["succeeded"], "started"))
    }

    @Test func retryAfterReadsSecondsAndIsCapped() {
        #expect(WebhookSender.retryAfter("7") == .seconds(7))
        #expect(WebhookSender.retryAfter("999999") == .seconds(86_400))
        #expect(WebhookSender.retryAfter("soon") == nil)
        // A receiver that answers "Retry-After: nan" (or "inf") must not crash the sender.
        #expect(WebhookSender.retryAfter("nan") == nil)
        #expect(WebhookSender.retryAfter("inf") == .seconds(86_400))
        #expect(WebhookSender.retryAfter("-inf") == .zero)
    }

    /// The event JSON of DESIGN.md §6, with the status the type implies and a stable id.
    @Test func theEventJSONHasTheDesignFields() throws {
        var info = EventTaskInfo(id: "t1", parts: [])
        info.agent = "report"
        info.status = "succeeded"
        info.costMicros = 1_210_000
        info.tokens = 310
        let event = StreamEvent(
            streamID: "1700000000000-0", type: "progress", seq: 12, branch: 0, step: "analyse", atMilliseconds: 1_700_000_000_000,
            dataJSON: #"{"fraction":0.4,"message":"20/50 documents"}"#)
        let body = try JSONValue.parse(Array(EventMessage.body(task: info, event).utf8))
        #expect(body["v"]?.intValue == 1)
        #expect(body["id"]?.stringValue == "evt_t1_12_1700000000000-0")
        #expect(body["task_id"]?.stringValue == "t1")
        #expect(body["agent"]?.stringValue == "report")
        #expect(body["seq"]?.intValue == 12)
        #expect(body["type"]?.stringValue == "progress")
        #expect(body["status"]?.stringValue == "running")
        #expect(body["step"]?.stringValue == "analyse")
        #expect(body["progress"]?["fraction"]?.doubleValue == 0.4)
        #expect(body["budget"]?["cost_usd"]?.doubleValue == 1.21)
        #expect(body["at"]?.stringValue == "2023-11-14T22:13:20.000Z")
        #expect(EventMessage.routingKey(task: info, event) == "report.t1.progress")
    }
}
