import Baton
import Foundation
import Testing

/// Bad input without servers (issue 7): the JSON nesting limit and the AMQP content type check. The end-to-end
/// corpus is ``IntegrationBadInputTests``; the fuzz targets are `scripts/fuzz`.
@Suite("Bad input: JSON nesting and content type")
struct BadInputTests {
    static func nested(_ depth: Int, closed: Bool = true) -> [UInt8] {
        Array(repeating: UInt8(ascii: "["), count: depth) + (closed ? Array(repeating: UInt8(ascii: "]"), count: depth) : [])
    }

    @Test("Nesting deeper than the limits (128 on the wire, 512 anywhere) is refused with an error naming the limit, not a crash")
    func nestingLimit() throws {
        // JSONValue.parse (HTTP bodies, and what Baton stored itself) allows Foundation's 512; the wire, 128.
        #expect(try JSONValue.parse(Self.nested(JSONCoding.foundationDepth)).arrayValue != nil)
        for depth in [513, 100_000] {
            // 513 unclosed brackets made Foundation's JSON scanner trap (SIGILL).
            for closed in [true, false] {
                #expect(throws: BatonError.self) { try JSONValue.parse(Self.nested(depth, closed: closed)) }
            }
        }
        let wire = Array(#"{"v":1,"agent":"a","input":"#.utf8)
        #expect(try SubmitRequest.decode(wire + Self.nested(JSONCoding.maxDepth - 1) + [UInt8(ascii: "}")], maxBytes: 1 << 20).agent == "a")
        #expect(throws: BatonError.self) {
            try SubmitRequest.decode(wire + Self.nested(JSONCoding.maxDepth) + [UInt8(ascii: "}")], maxBytes: 1 << 20)
        }
        do {
            _ = try SubmitRequest.decode(Array(#"{"v":1,"agent":"a","input":"#.utf8) + Self.nested(512, closed: false), maxBytes: 1 << 20)
            Issue.record("a 513-deep submit was accepted")
        } catch {
            #expect(error.code == .invalidMessage)
            #expect(error.message.contains("more than \(JSONCoding.maxDepth) levels"), "\(error.message)")
        }
        #expect(throws: BatonError.self) { try SignalRequest.decode(Array(#"{"payload":"#.utf8) + Self.nested(200)) }
        #expect(throws: BatonError.self) { try StepMessage.decode(Array(#"{"task":"#.utf8) + Self.nested(513, closed: false)) }
    }

    @Test("Brackets inside strings, escaped quotes included, do not count toward the nesting limit")
    func bracketsInStrings() throws {
        let text = "{\"a\":\"" + String(repeating: "[{", count: 1000) + "\\\"" + String(repeating: "[", count: 1000) + "\"}"
        #expect(try JSONValue.parse(Array(text.utf8))["a"]?.stringValue?.count == 3001)
        // An escaped backslash before the closing quote: the string ends there.
        let body = #"{"v":1,"agent":"stepchain","input":{"s":"\\"# + String(repeating: "[", count: 300) + #"\\"}}"#
        let request = try SubmitRequest.decode(Array(body.utf8), maxBytes: 1 << 20)
        #expect(request.agent == "stepchain")
    }

    @Test("Invalid UTF-8 in a string is refused as such, not as a wrong type")
    func invalidUTF8() throws {
        let body = Array(#"{"v":1,"agent":"stepchain","input":{"s":""#.utf8) + [0xFF, 0xFE] + Array(#""}}"#.utf8)
        do {
            _ = try SubmitRequest.decode(body, maxBytes: 1 << 20)
            Issue.record("accepted")
        } catch {
            #expect(error.message.contains("not UTF-8 (an invalid byte sequence at byte 41)"), "\(error.message)")
        }
    }

    @Test("An absurd max_cost_usd (1e300) is refused naming the field; dollars to micro-dollars never traps")
    func absurdCost() throws {
        let body = Array(#"{"v":1,"agent":"stepchain","budget":{"max_cost_usd":1e300}}"#.utf8)
        do {
            _ = try SubmitRequest.decode(body, maxBytes: 1 << 20)
            Issue.record("accepted")
        } catch {
            #expect(error.field == "budget.max_cost_usd")
            #expect(error.message.contains("a billion dollars"), "\(error.message)")
        }
        #expect(
            try SubmitRequest.decode(Array(#"{"v":1,"agent":"a","budget":{"max_cost_usd":1000000000}}"#.utf8), maxBytes: 1 << 20).agent
                == "a")
        #expect(Charge.micros(fromUSD: 1e300) == 1_000_000_000_000_000)
        #expect(Charge.micros(fromUSD: -.infinity) == -1_000_000_000_000_000)
        #expect(Charge.micros(fromUSD: .nan) == 0)
        #expect(Charge.micros(fromUSD: 0.0001) == 100)
    }

    @Test("A step message with a leading zero (not JSON) is refused by the fast path too, as by the generic decoder")
    func leadingZeros() throws {
        // Found by `scripts/fuzz step`: the fast scanner read `"v":01` as 1.
        for number in ["01", "00", "-01", "0004"] {
            let text = #"{"agent":"a","attempt":1,"branch":0,"seq":"# + number + #","step":"s","task":"t","v":1}"#
            #expect(throws: BatonError.self) { try StepMessage.decode(Array(text.utf8)) }
        }
        // Also found by it: a repeated key, which the fast path read as the last and the generic decoder as the first.
        let repeated = Array(#"{"agent":"a","attempt":1,"branch":0,"seq":4,"step":"s","task":"first","task":"second","v":1}"#.utf8)
        #expect(try StepMessage.decode(repeated) == (try JSONCoding.decoder.decode(StepMessage.self, from: Data(repeated))))
        let zero = try StepMessage.decode(Array(#"{"agent":"a","attempt":1,"branch":0,"seq":0,"step":"s","task":"t","v":1}"#.utf8))
        #expect(zero.seq == 0 && zero.branch == 0)
    }

    @Test("An AMQP content type that is not JSON is refused naming content_type; absent and JSON types pass")
    func contentType() throws {
        for accepted in [nil, "", "application/json", "Application/JSON; charset=utf-8", "text/json", "application/vnd.acme+json"] {
            try JSONCoding.checkContentType(accepted, what: "the submit")
        }
        for refused in ["text/plain", "application/xml", "application/octet-stream", "application/msgpack"] {
            do {
                try JSONCoding.checkContentType(refused, what: "the submit")
                Issue.record("\(refused) passed")
            } catch {
                #expect(error.field == "content_type")
                #expect(error.message.contains("'\(refused)'") && error.message.contains("application/json"), "\(error.message)")
            }
        }
    }
}
