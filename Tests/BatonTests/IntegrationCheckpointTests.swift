import Foundation
import RedisClient
import TestSupport
import Testing

@testable import Baton

/// The commit script on the real Redis: large states staged beside it (a `SET` the script renames), small ones through
/// it, and what a commit leaves in the task's fields.
@Suite("Redis: checkpoints and commit writes", .enabled(if: TestServers.available))
struct IntegrationCheckpointTests {
    /// The keys under the store's prefix whose name contains `part` (SCAN, never KEYS).
    static func keys(containing part: String, in store: RedisTaskStore) async throws -> [String] {
        try await Harness.scanKeys(store.redis, matching: store.settings.keys.prefix + "*" + part + "*")
    }

    static func claim(_ store: RedisTaskStore, _ id: String, seq: Int64, worker: String = "w-ckpt") async throws -> ClaimedTask? {
        let message = StepMessage(task: id, agent: "report", step: "start", seq: seq, branch: 0, attempt: 1)
        guard case .run(let claimed) = try await store.claim(message, worker: worker, leaseMilliseconds: 10_000) else { return nil }
        return claimed
    }

    static func commit(_ id: String, token: Int64, seq: Int64, state: String) -> Commit {
        let next = StepMessage(task: id, agent: "report", step: "start", seq: seq + 1, branch: 0, attempt: 1)
        return Commit(task: id, token: token, seq: seq, kind: .next(step: "start"), stateJSON: state, next: .step(next, queue: "default"))
    }

    /// A state of `bytes` bytes (JSON).
    static func state(bytes: Int, mark: String) -> String {
        "{\"mark\":\"\(mark)\",\"pad\":\"" + String(repeating: "x", count: max(0, bytes - 24 - mark.utf8.count)) + "\"}"
    }

    /// The commit command is built argument by argument on the hot path: its keys are the task's and its bucket's keys
    /// as ``RedisKeys`` names them everywhere else, in the script's order, for a root task and a child.
    @Test func theCommitCommandNamesTheKeysOfTheLayout() async throws {
        let store = try await EventRelayTests.store(prefix: "bt-ckpt-keys")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let keys = store.settings.keys
        for id in ["0123456789abcdef", "0123456789abcdef/3/1"] {
            let command = try store.commitCommand(Self.commit(id, token: 4, seq: 2, state: "{}"), outboxID: "ob-7", staged: true)
            let bucket = keys.bucket(of: id)
            let expected = [
                keys.task(id), keys.budget(id), keys.checkpointPrefix(id), keys.events(id), keys.outbox(id),
                keys.indexPrefix(bucket: bucket),
                keys.outboxIndex(bucket: bucket), keys.timers(bucket: bucket), keys.chargedEffects(id), keys.signals(id),
                keys.webhooksDue(bucket: bucket), store.stagedCheckpointKey(id, outboxID: "ob-7"), keys.eventsPending(bucket: bucket),
            ]
            let arguments = command.arguments.map { String(decoding: $0, as: UTF8.self) }
            #expect(arguments[0] == "EVALSHA" && arguments[2] == "13")
            #expect(Array(arguments[3..<16]) == expected)
            #expect(command.count == 3 + 13 + 28)
            #expect(arguments[16] == "4" && arguments[17] == "2" && arguments[18] == "next" && arguments[28] == id)
        }
        // The bucket keys come from a table built once; a bucket past it is still named the same way.
        let wide = RedisKeys(prefix: "p:", bucketCount: 5000)
        #expect(wide.eventsPending(bucket: 4999) == "p:events_pending:{4999}" && wide.indexPrefix(bucket: 3) == "p:index:{3}:")
        #expect(wide.outboxIndex(bucket: 4500) == "p:outbox:{4500}" && wide.timers(bucket: 0) == "p:timers:{0}")
    }

    @Test func aLargeStateIsStagedBesideTheScriptAndASmallOneGoesThroughIt() async throws {
        let (store, id) = try await EventRelayTests.storeWithTask(prefix: "bt-ckpt", name: "staged")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let keys = store.settings.keys
        let large = Self.state(bytes: RedisTaskStore.stagedCheckpointBytes * 3, mark: "large")
        let small = Self.state(bytes: 200, mark: "small")

        // Staged: the commit is two commands, and the checkpoint lands under the next seq with no expiry.
        let first = try #require(try await Self.claim(store, id, seq: 0))
        #expect(try store.commitRequest(Self.commit(id, token: first.token, seq: 0, state: large)).commands.count == 2)
        #expect(try store.commitRequest(Self.commit(id, token: first.token, seq: 0, state: small)).commands.count == 1)
        guard case .committed("queued", 1, _, _) = try await store.commit(Self.commit(id, token: first.token, seq: 0, state: large)) else {
            Issue.record("the staged commit did not commit")
            return
        }
        #expect(try await redis.send("GET", keys.checkpoint(id, seq: 1)).string == large)
        #expect(try await redis.send("PTTL", keys.checkpoint(id, seq: 1)).int == -1)
        #expect(try await Self.keys(containing: ":ckpt:staged:", in: store).isEmpty)

        // The next claim reads it back with a GET beside the script (none when the worker holds the state); a small state
        // then goes through the script, in a batch with nothing staged.
        let message = StepMessage(task: id, agent: "report", step: "start", seq: 1, branch: 0, attempt: 1)
        #expect(store.claimCommands(message, worker: "w", leaseMilliseconds: 1_000).map(\.name) == ["EVALSHA", "GET", "HGET"])
        #expect(store.claimCommands(message, worker: "w", leaseMilliseconds: 1_000, stateCached: true).map(\.name) == ["EVALSHA"])
        let second = try #require(try await Self.claim(store, id, seq: 1))
        #expect(String(decoding: second.stateJSON, as: UTF8.self) == large)
        #expect(String(decoding: second.inputJSON, as: UTF8.self) == "{}")
        let results = await store.commitAll([Self.commit(id, token: second.token, seq: 1, state: small)])
        guard case .success(.committed("queued", 2, _, _)) = results.first else {
            Issue.record("the small commit did not commit: \(results)")
            return
        }
        #expect(try await redis.send("GET", keys.checkpoint(id, seq: 2)).string == small)

        // A staged commit that is fenced (a stale token) writes no checkpoint and leaves no staged key behind.
        let third = try #require(try await Self.claim(store, id, seq: 2))
        let fenced = await store.commitAll([
            Self.commit(id, token: third.token - 1, seq: 2, state: large), Self.commit(id, token: third.token, seq: 2, state: small),
        ])
        guard case .success(.fenced) = fenced.first, case .success(.committed("queued", 3, _, _)) = fenced.last else {
            Issue.record("expected the stale commit fenced and the holder's committed: \(fenced)")
            return
        }
        #expect(try await redis.send("GET", keys.checkpoint(id, seq: 3)).string == small)
        #expect(try await Self.keys(containing: ":ckpt:staged:", in: store).isEmpty)

        // A speculative staged commit that must be claimed first leaves nothing either.
        var speculative = Self.commit(id, token: third.token, seq: 3, state: large)
        speculative.speculative = ("start", 0, "wrong limits")
        guard case .unclaimed = try await store.commit(speculative) else {
            Issue.record("a speculative commit under other limits was not sent to claim")
            return
        }
        #expect(try await redis.send("EXISTS", keys.checkpoint(id, seq: 4)).int == 0)
        #expect(try await Self.keys(containing: ":ckpt:staged:", in: store).isEmpty)
        try await EventRelayTests.deleteTask(id, in: store, checkpoints: 0...4)
    }

    /// The script renames the staged key before its first other write: when the `SET` never happened (Redis refused it,
    /// say, out of memory) the commit fails with nothing written, and the worker's error names the checkpoint.
    @Test func aStagedCheckpointThatIsMissingStopsTheCommitBeforeAnyWrite() async throws {
        let (store, id) = try await EventRelayTests.storeWithTask(prefix: "bt-ckpt", name: "unstaged")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let keys = store.settings.keys
        let claimed = try #require(try await Self.claim(store, id, seq: 0))
        var commit = Self.commit(
            id, token: claimed.token, seq: 0, state: Self.state(bytes: RedisTaskStore.stagedCheckpointBytes, mark: "m"))
        commit.charge = Charge(costMicros: 5, tokens: 7)
        let before = try await redis.send("HGETALL", keys.task(id))
        let budgetBefore = try await redis.send("HGETALL", keys.budget(id))
        let outboxBefore = try await redis.send("HGETALL", keys.outbox(id))
        // The script alone, without the SET in front of it.
        let script = try store.commitCommand(commit, outboxID: "missing-1", staged: true)
        let reply = try await redis.pipeline([script])
        #expect(reply.first?.errorMessage?.contains("no such key") == true)
        #expect(try await redis.send("HGETALL", keys.task(id)) == before)
        #expect(try await redis.send("HGETALL", keys.budget(id)) == budgetBefore)
        #expect(try await redis.send("EXISTS", keys.checkpoint(id, seq: 1)).int == 0)
        #expect(try await redis.send("HGETALL", keys.outbox(id)) == outboxBefore)

        // How a refused SET reads to the worker.
        let refused = RedisReply.error("OOM command not allowed when used memory > 'maxmemory'.")
        #expect(throws: BatonError.self) { try store.commitOutcome([refused, .error("ERR no such key")], commit, outboxID: "x") }
        do {
            _ = try store.commitOutcome([refused, .error("ERR no such key")], commit, outboxID: "x")
        } catch {
            #expect("\(error)".contains("refused to store task \(id)'s checkpoint"))
            #expect("\(error)".contains("OOM"))
        }
        try await EventRelayTests.deleteTask(id, in: store)
    }

    /// A commit resets what the step's claim and wake-up left: the lease, a stale status reason, the wakeup; and adds the
    /// step's charges to the counters. (Tried in the thirteenth session: writing only the fields that change. It saved
    /// no measurable Redis CPU on a 26-field task hash, so every field is written; this test guards either way.)
    @Test func aCommitResetsEveryFieldThatDiffers() async throws {
        let (store, id) = try await EventRelayTests.storeWithTask(prefix: "bt-ckpt", name: "fields")
        let redis = store.redis
        defer { Task { await redis.close() } }
        let keys = store.settings.keys
        let claimed = try #require(try await Self.claim(store, id, seq: 0))
        _ = try await redis.send("HSET", keys.task(id), "status_reason", "left over", "wakeup", "{\"trigger\":\"signal\"}")
        let leased = try await redis.send("HMGET", keys.task(id), "lease_owner", "lease_until", "status").array?.map(\.string)
        #expect(leased?[0] == "w-ckpt" && leased?[1] != "0" && leased?[2] == "running")
        var commit = Self.commit(id, token: claimed.token, seq: 0, state: "{}")
        commit.charge = Charge(costMicros: 3, tokens: 0)
        guard case .committed("queued", 1, _, _) = try await store.commit(commit) else {
            Issue.record("the commit did not commit")
            return
        }
        let fields = ["lease_owner", "lease_until", "claims", "status", "status_reason", "wakeup", "seq", "step", "attempt"]
        let after = try await redis.send(RedisCommand("HMGET", arguments: [keys.task(id)] + fields)).array?.map(\.string)
        #expect(after == ["", "0", "0", "queued", "", "", "1", "start", "1"])
        // Counters: the charged ones and steps moved; the rest stay as they were.
        let budget = try await redis.send("HMGET", keys.budget(id), "cost", "tokens", "steps", "tool_calls", "handoffs").array?.map(
            \.string)
        #expect(budget == ["3", "0", "1", "0", "0"])
        try await EventRelayTests.deleteTask(id, in: store, checkpoints: 0...1)
    }
}
