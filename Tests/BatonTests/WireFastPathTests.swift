import Baton
import Foundation
import Testing

/// The hand-written JSON of the hot path writes exactly what the generic encoder writes, and the fast step
/// decoder agrees with the generic one (or steps aside so its precise errors still name the field).
@Suite("Hot-path JSON")
struct WireFastPathTests {
    static let awkward = ["plain", "quote \" and \\ backslash", "line\nbreak\ttab\r", "\u{01}\u{1F} control", "ünïcødé 🎉", "/slash", ""]

    @Test(arguments: awkward) func stepMessageTextMatchesTheEncoder(step: String) throws {
        let message = StepMessage(task: "t-1.a_b", agent: "stepchain", step: step, seq: 12, branch: 2, attempt: 3)
        #expect(message.jsonText == (try JSONCoding.string(message)))
        #expect(try StepMessage.decode(Array(message.jsonText.utf8)) == message)
    }

    @Test(arguments: [Int64.min, -1_000_000_007, -10, -9, -1, 0, 1, 9, 10, 99, 100, 1_795_394_015_418, Int64.max])
    func stepMessageIntegersMatchTheEncoder(value: Int64) throws {
        let message = StepMessage(task: "t", agent: "a", step: "s", seq: value, branch: value / 3, attempt: value / -7)
        #expect(message.jsonText == (try JSONCoding.string(message)))
    }

    @Test(arguments: awkward) func outboxTextMatchesTheEncoder(text: String) throws {
        let message = OutboxMessage(
            exchange: "baton.steps", routingKey: text, body: "{\"x\":\(JSONText.quoted(text))}",
            headers: ["b": text, "a": "1", "x-baton-task": "t"])
        #expect(message.jsonText == (try JSONCoding.string(message)))
        let empty = OutboxMessage(exchange: "", routingKey: "q", body: "{}")
        #expect(empty.jsonText == (try JSONCoding.string(empty)))
    }

    @Test func theFastDecoderAgreesWithTheGenericOneOnOtherShapes() throws {
        // Spaces, another key order, and escapes: the same message.
        let spaced = #"{ "v": 1, "task": "t", "agent": "a", "step": "s\"q", "seq": 4, "branch": 0, "attempt": 1 }"#
        #expect(
            try StepMessage.decode(Array(spaced.utf8)) == StepMessage(task: "t", agent: "a", step: "s\"q", seq: 4, branch: 0, attempt: 1))
        // Unknown fields are ignored, as the wire format promises.
        let extra = #"{"v":1,"task":"t","agent":"a","step":"s","seq":4,"branch":0,"attempt":1,"trace":"x"}"#
        #expect(try StepMessage.decode(Array(extra.utf8)).seq == 4)
        // Wrong types and missing fields still name the field.
        for (body, field) in [
            (#"{"v":1,"task":"t","agent":"a","step":"s","seq":"4","branch":0,"attempt":1}"#, "seq"),
            (#"{"v":1,"task":"t","agent":"a","step":"s","branch":0,"attempt":1}"#, "seq"),
            (#"{"v":2,"task":"t","agent":"a","step":"s","seq":4,"branch":0,"attempt":1}"#, "v"),
        ] {
            #expect(throws: BatonError.self) { try StepMessage.decode(Array(body.utf8)) }
            do {
                _ = try StepMessage.decode(Array(body.utf8))
            } catch {
                #expect(error.field == field, "\(body)")
            }
        }
        // A fraction is not an integer: refused, never truncated.
        #expect(throws: BatonError.self) {
            try StepMessage.decode(Array(#"{"v":1,"task":"t","agent":"a","step":"s","seq":4.5,"branch":0,"attempt":1}"#.utf8))
        }
    }
}
