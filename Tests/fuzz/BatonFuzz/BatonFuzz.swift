// libFuzzer targets over Baton's parsers of untrusted bytes (issue 7, "Bad input"). Built only by
// `scripts/fuzz` (`BATON_FUZZ=1 swift build --sanitize=fuzzer --sanitize=address`): `Package.swift` adds this
// target only when `BATON_FUZZ` is set, so `swift build`, `swift test` and CI never see it. One binary, the
// target chosen by `BATON_FUZZ_TARGET` (see `FuzzTarget`); each input runs the module's real code.
import CHiredis
import Foundation

@testable import Baton
@testable import BatonExamples
@testable import RedisClient

/// The targets; `BATON_FUZZ_TARGET` names one.
enum FuzzTarget: String, CaseIterable {
    /// `SubmitRequest.decode` (the `baton.submit` body), then the agent's input decoder (`AgentRunner.initialState`).
    case submit
    /// The step-message fast scanner (`StepMessage.fastDecode`) against the generic decoder, and `StepMessage.decode`.
    case step
    /// `SignalRequest.decode` (the `baton.signals` body) and the HTTP signal/merge-patch paths over `JSONValue`.
    case signal
    /// A checkpoint as Redis holds it: each example agent's `State` decoder, `JSONValue.parse` and merge patch.
    case checkpoint
    /// RESP bytes through hiredis's reader and `HiredisLink.convert` into `RedisReply`, then the store's script-reply
    /// parsers (`claimOutcome`, `TaskQueries.hash`, `TaskView(task:budget:)`, `DeadLetterView(fields:)`).
    case reply
    /// A YAML configuration file through `BatonConfiguration.load` (key check, YAML provider, every reader).
    case config

    static let current: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["BATON_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            let names = allCases.map(\.rawValue).joined(separator: ", ")
            FileHandle.standardError.write(Data("BATON_FUZZ_TARGET must name a target: \(names) (got '\(name)')\n".utf8))
            exit(2)
        }
        return target
    }()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    switch FuzzTarget.current {
    case .submit: fuzzSubmit(bytes)
    case .step: fuzzStep(bytes)
    case .signal: fuzzSignal(bytes)
    case .checkpoint: fuzzCheckpoint(bytes)
    case .reply: fuzzReply(bytes)
    case .config: fuzzConfig(bytes)
    }
    return 0
}

/// A broken invariant: crash so libFuzzer saves the input.
func violated(_ what: String, _ bytes: [UInt8]) -> Never {
    fatalError("invariant broken: \(what) — input \(String(decoding: bytes.prefix(300), as: UTF8.self))")
}

// MARK: - Wire

let runners: [AgentRunner] = [
    AgentRunner(StepChainAgent()), AgentRunner(FlakyAgent()), AgentRunner(SpenderAgent()), AgentRunner(SleeperAgent()),
    AgentRunner(ApprovalAgent()), AgentRunner(FanoutAgent()),
]

func fuzzSubmit(_ bytes: [UInt8]) {
    guard let request = try? SubmitRequest.decode(bytes, maxBytes: 1 << 20) else { return }
    // What is accepted re-encodes to a body that is accepted again.
    guard let again = try? JSONCoding.encode(request), (try? SubmitRequest.decode(again, maxBytes: 1 << 22)) != nil else {
        violated("an accepted submit does not survive its own encoding", bytes)
    }
    // Its input goes through the input decoder of each example agent (errors are fine; crashes are not).
    guard let input = try? JSONCoding.encode(request.input) else { violated("an accepted input does not encode", bytes) }
    for runner in runners { _ = try? runner.initialState(input) }
}

func fuzzStep(_ bytes: [UInt8]) {
    let fast = StepMessage.fastDecode(bytes)
    if let fast {
        // The fast path must agree with the generic decoder on everything it accepts.
        guard let slow = try? JSONCoding.decoder.decode(StepMessage.self, from: Data(bytes)) else {
            violated("the fast step scanner accepted what the JSON decoder refuses", bytes)
        }
        guard slow == fast else { violated("the fast step scanner read \(fast), the JSON decoder \(slow)", bytes) }
        // And its own output reads back the same.
        guard StepMessage.fastDecode(Array(fast.jsonText.utf8)) == fast else { violated("jsonText does not read back", bytes) }
    }
    if let message = try? StepMessage.decode(bytes) {
        guard (try? StepMessage.decode(Array(message.jsonText.utf8))) == message else {
            violated("an accepted step message does not survive jsonText", bytes)
        }
    }
}

func fuzzSignal(_ bytes: [UInt8]) {
    if let request = try? SignalRequest.decode(bytes) {
        let signal = request.taskSignal(fallbackActor: "fuzz")
        if !signal.payloadJSON.isEmpty, (try? JSONValue.parse(Array(signal.payloadJSON.utf8))) == nil {
            violated("an accepted signal's payload does not parse back", bytes)
        }
    }
    // The HTTP API reads signal and approval bodies as any JSON value first.
    if let value = try? JSONValue.parse(bytes) {
        _ = value.mergePatch(to: ["a": 1])
    }
}

// MARK: - Checkpoints

func fuzzCheckpoint(_ bytes: [UInt8]) {
    let data = Data(bytes)
    let decoder = JSONCoding.decoder
    _ = try? decoder.decode(StepChainAgent.State.self, from: data)
    _ = try? decoder.decode(FlakyAgent.State.self, from: data)
    _ = try? decoder.decode(SpenderAgent.State.self, from: data)
    _ = try? decoder.decode(SleeperAgent.State.self, from: data)
    _ = try? decoder.decode(ApprovalAgent.State.self, from: data)
    _ = try? decoder.decode(FanoutAgent.State.self, from: data)
    _ = try? decoder.decode(ReportAgent.State.self, from: data)
    _ = try? decoder.decode(OutboxMessage.self, from: data)
    if let value = try? JSONValue.parse(bytes) {
        // What parses encodes, and the encoding parses to the same value.
        let text = value.jsonString
        guard let again = try? JSONValue.parse(Array(text.utf8)) else { violated("a parsed value's jsonString does not parse", bytes) }
        guard again.jsonString == text else { violated("jsonString is not stable", bytes) }
        _ = value.mergePatch(to: value)
    }
}

// MARK: - Redis replies

/// A store on the test Redis (`BATON_REDIS_URL`), for the script-reply parsers that are store methods; nil when
/// no server answers (the target then fuzzes the reader and the static parsers only).
let replyStore: RedisTaskStore? = {
    guard let url = ProcessInfo.processInfo.environment["BATON_REDIS_URL"], !url.isEmpty,
        let configuration = try? RedisConfiguration(url: url)
    else { return nil }
    let box = Box<RedisConnection>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        box.value = try? await RedisConnection.connect(configuration: configuration, logger: .init(label: "fuzz"))
        done.signal()
    }
    done.wait()
    return box.value.map { RedisTaskStore(redis: $0) }
}()

final class Box<T>: @unchecked Sendable {
    var value: T?
}

/// Whether some `*N` array header in `bytes` claims more elements than the input has bytes. hiredis 0.14's reader
/// allocates an array's element pointers when it reads the header (`*1111111112` is an 8.9 GB `calloc`, which
/// libFuzzer reports as out-of-memory), and such an array can never complete within this input. Newer hiredis caps
/// the count (`maxelements`); 0.14.1, Debian 12's, does not. The server Baton talks to is its own Redis, so this is
/// the harness's limit, not a parser bug (docs/reliability.md, fifteenth session).
func claimsImpossibleArray(_ bytes: [UInt8]) -> Bool {
    var index = 0
    while index < bytes.count {
        if bytes[index] == UInt8(ascii: "*") && (index == 0 || bytes[index - 1] == UInt8(ascii: "\n")) {
            var count = 0
            var digit = index + 1
            while digit < bytes.count, let value = bytes[digit].wholeNumberValue, count <= bytes.count {
                count = count * 10 + value
                digit += 1
            }
            if count > bytes.count { return true }
        }
        index += 1
    }
    return false
}

extension UInt8 {
    /// The value of an ASCII digit, or nil.
    var wholeNumberValue: Int? { self >= 0x30 && self <= 0x39 ? Int(self - 0x30) : nil }
}

func fuzzReply(_ bytes: [UInt8]) {
    if claimsImpossibleArray(bytes) { return }
    guard let reader = redisReaderCreate() else { return }
    defer { redisReaderFree(reader) }
    let fed = bytes.withUnsafeBufferPointer { buffer in
        buffer.baseAddress.map { base in
            UnsafeRawPointer(base).withMemoryRebound(to: CChar.self, capacity: buffer.count) { redisReaderFeed(reader, $0, buffer.count) }
        } ?? REDIS_OK
    }
    guard fed == REDIS_OK else { return }
    let message = StepMessage(task: "fuzz-task", agent: "stepchain", step: "append", seq: 3, branch: 0, attempt: 1)
    for _ in 0..<8 {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == REDIS_OK, let raw else { return }
        let reply = HiredisLink.convert(raw.assumingMemoryBound(to: redisReply.self))
        freeReplyObject(raw)
        _ = (reply.string, reply.int, reply.double, reply.bytes, reply.isNull, reply.errorMessage)
        let hash = TaskQueries.hash(reply)
        _ = TaskView(task: hash, budget: hash, signals: hash)
        _ = DeadLetterView(fields: hash)
        _ = BudgetLimits(fields: hash)
        _ = BudgetUsage(fields: hash)
        if let store = replyStore {
            _ = try? store.claimOutcome([reply], message)
            // With the checkpoint and input read beside the script, and the commit's replies (a staged checkpoint's SET
            // first).
            _ = try? store.claimOutcome([reply, reply, reply], message)
            let commit = Commit(task: "fuzz-task", token: 1, seq: 3, kind: .next(step: "append"), stateJSON: "{}", next: nil)
            _ = try? store.commitOutcome([reply], commit, outboxID: "fuzz")
            _ = try? store.commitOutcome([.status("OK"), reply], commit, outboxID: "fuzz")
        }
    }
}

// MARK: - Configuration

let configPath = NSTemporaryDirectory() + "baton-fuzz-config-\(getpid()).yaml"

func fuzzConfig(_ bytes: [UInt8]) {
    guard FileManager.default.createFile(atPath: configPath, contents: Data(bytes)) else { return }
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        _ = try? await BatonConfiguration.load(file: configPath, environment: [:], workerID: "fuzz")
        done.signal()
    }
    done.wait()
}
