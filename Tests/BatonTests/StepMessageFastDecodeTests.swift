import Testing

@testable import Baton

/// The step message's fast decoder (the one every delivery goes through) reads exactly the shape `jsonText` writes
/// and steps aside (nil) for everything else, so the generic decoder's rules and errors apply there.
@Suite("Step message fast decoder")
struct StepMessageFastDecodeTests {
    @Test func readsWhatJSONTextWritesInAnyKeyOrder() {
        let message = StepMessage(task: "t-1.a_b", agent: "stepchain", step: "analyse", seq: 12, branch: 2, attempt: 3)
        #expect(StepMessage.fastDecode(Array(message.jsonText.utf8)) == message)
        let reordered = #"{ "seq": 12, "v": 1, "attempt": 3, "task": "t-1.a_b", "step": "analyse", "branch": 2, "agent": "stepchain" }"#
        #expect(StepMessage.fastDecode(Array(reordered.utf8)) == message)
    }

    @Test(arguments: [
        #"{"v":1,"task":"t","task":"u","agent":"a","step":"s","seq":4,"branch":0,"attempt":1}"#,  // a key twice
        #"{"v":1,"task":"t","agent":"a","step":"s","seq":4,"branch":0}"#,  // attempt missing
        #"{"v":1,"task":"t","agent":"a","step":"s","seq":4,"branch":0,"attempt":1,"trace":"x"}"#,  // unknown key
        #"{"v":1,"task":"t","agent":"a","step":"s","seq":"4","branch":0,"attempt":1}"#,  // a number as a string
        #"{"v":1,"task":5,"agent":"a","step":"s","seq":4,"branch":0,"attempt":1}"#,  // a string as a number
        #"{"v":2,"task":"t","agent":"a","step":"s","seq":4,"branch":0,"attempt":1}"#,  // another version
        #"{"v":1,"ta\u0073k":"t","agent":"a","step":"s","seq":4,"branch":0,"attempt":1}"#,  // an escaped key
        #"{"v":1,"tas":"t","agent":"a","step":"s","seq":4,"branch":0,"attempt":1}"#,  // a key's prefix
        #"{"v":1,"taskk":"t","agent":"a","step":"s","seq":4,"branch":0,"attempt":1}"#,  // a longer key
        #"{"v":1,"task":"t","agent":"a","step":"s","seq":4,"branch":0,"attempt":1} x"#,  // trailing bytes
        #"{}"#,
    ])
    func stepsAsideForAnythingElse(body: String) {
        #expect(StepMessage.fastDecode(Array(body.utf8)) == nil)
    }
}
