import Foundation
import RedisClient
import TestSupport
import Testing

@testable import Baton

/// `limits.retention`: the sweep's script on Redis, driven in-process (the `waiter` test agent's routes).
@Suite("Redis: retention of finished tasks", .enabled(if: TestServers.available))
struct RedisRetentionTests {
    /// Every key under the task's `<prefix>{<root>}…` base.
    static func keysLeft(_ store: RedisTaskStore, _ id: String) async throws -> [String] {
        try await Harness.scanKeys(store.redis, matching: String(store.settings.keys.task(id).dropLast(":task".count)) + "*")
    }

    @Test("finished tasks past the retention are deleted whole; recent, waiting, dead-lettered and unpublished ones are kept")
    func deletesOnlyWhatIsDue() async throws {
        // One bucket: every task in the same status indexes, so the sweep's paging past a kept task is exercised.
        try await RedisWaitScriptTests.withDriver(buckets: 1) { store, driver, bus in
            let queries = TaskQueries(store: store)
            let keys = store.settings.keys
            // Succeeded: a wait whose time is past wakes in its commit, then the resumed step completes.
            var succeeded: [String] = []
            for _ in 0..<2 {
                succeeded.append(try await driver.submit(SubmitRequest(agent: "waiter", input: ["mode": "past"])).id)
                _ = try await RedisWaitScriptTests.deliverLast(driver, bus)
                _ = try await RedisWaitScriptTests.deliverLast(driver, bus)
            }
            // `done` ended first: the head of its status index.
            let (done, later) = (succeeded[0], succeeded[1])
            // Waiting, cancelled, dead-lettered.
            var parked: [String] = []
            for _ in 0..<3 {
                parked.append(try await driver.submit(SubmitRequest(agent: "waiter", input: ["mode": "timeout"])).id)
                _ = try await RedisWaitScriptTests.deliverLast(driver, bus)
            }
            let (waiting, cancelled, dead) = (parked[0], parked[1], parked[2])
            #expect(try await store.control(task: cancelled, action: "cancel", reason: "test", actor: "test").first == "cancelled")
            let error = #"{"code":"test","message":"dead-lettered by the test"}"#
            #expect(
                try await store.control(task: dead, action: "dead", reason: "test", actor: "test", extra: error).first == "dead_lettered")
            let relay = EventRelay(store: store, bus: bus, logger: Harness.logger)
            while try await relay.round().published > 0 {}
            #expect(try await queries.task(done)?.status == "succeeded")
            #expect(try await Self.keysLeft(store, done).count >= 4)

            // Ended less than an hour ago: kept.
            #expect(try await store.purgeFinished(olderThan: .seconds(3600)) == RedisTaskStore.PurgeResult())

            // A finished task whose events are not all on baton.events yet is kept until they are; one page at a time,
            // the sweep reads past it to the task that ended after it.
            let bucket = keys.bucket(of: done)
            _ = try await store.redis.send("ZADD", keys.eventsPending(bucket: bucket), 0, done)
            #expect(keys.bucketCount == 1)
            let first = try await store.purgeFinished(olderThan: .zero, limit: 1)
            #expect(first == RedisTaskStore.PurgeResult(purged: 2, pending: 1, more: false))
            #expect(try await queries.task(done)?.status == "succeeded")
            #expect(try await queries.task(later) == nil)
            #expect(try await queries.task(cancelled) == nil)
            _ = try await store.redis.send("ZREM", keys.eventsPending(bucket: bucket), done)

            let second = try await store.purgeFinished(olderThan: .zero)
            #expect(second.purged == 1)
            #expect(second.pending == 0)
            for id in [done, later, cancelled] {
                #expect(try await queries.task(id) == nil)
                #expect(try await Self.keysLeft(store, id) == [])
                for status in RedisTaskStore.purgeableStatuses {
                    let score = try await store.redis.send("ZSCORE", keys.index(bucket: keys.bucket(of: id), status: status), id)
                    #expect(score.isNull, "\(id) is still in the \(status) index")
                }
            }
            #expect(try await queries.task(waiting)?.status == "waiting")
            #expect(try await queries.task(dead)?.status == "dead_lettered")
            #expect(try await store.purgeFinished(olderThan: .zero) == RedisTaskStore.PurgeResult())

            // A dead-lettered task goes `limits.retention` after an operator discards its dead letter.
            let client = BatonClient(store: store, amqp: nil, channel: nil, logger: Harness.logger)
            let letter = try await store.recordDeadLetter(
                ["task_id": dead, "reason": "retries_exhausted", "error": "test", "agent": "waiter", "body": "{}"]
            ).id
            #expect(try await store.purgeFinished(olderThan: .zero) == RedisTaskStore.PurgeResult())
            #expect(try await client.discard(deadLetter: letter, reason: "test", actor: "test") == .done("discarded"))
            #expect(try await store.purgeFinished(olderThan: .seconds(3600)) == RedisTaskStore.PurgeResult())
            #expect(try await store.purgeFinished(olderThan: .zero).purged == 1)
            #expect(try await queries.task(dead) == nil)
            #expect(try await Self.keysLeft(store, dead) == [])
            #expect(try await store.redis.send("ZCARD", keys.discarded(bucket: 0)).int == 0)
            #expect(try await store.redis.send("ZCARD", keys.index(bucket: 0, status: "dead_lettered")).int == 0)
            // Only a dead-lettered task is marked; one redriven after the discard is dropped from the discarded.
            #expect(try await store.markDeadLetterDiscarded(task: waiting) == false)
            let redriven = try await driver.submit(SubmitRequest(agent: "waiter", input: ["mode": "timeout"])).id
            _ = try await RedisWaitScriptTests.deliverLast(driver, bus)
            #expect(
                try await store.control(task: redriven, action: "dead", reason: "test", actor: "test", extra: error).first
                    == "dead_lettered")
            #expect(try await store.markDeadLetterDiscarded(task: redriven))
            #expect(try await store.control(task: redriven, action: "redrive", reason: "test", actor: "test").first == "redriven")
            #expect(try await store.purgeFinished(olderThan: .zero) == RedisTaskStore.PurgeResult())
            #expect(try await store.redis.send("ZCARD", keys.discarded(bucket: 0)).int == 0)
            #expect(try await queries.task(redriven)?.status == "queued")
        }
    }

    @Test("a dead letter nobody acted on is discarded after limits.dead_letter_retention, audited; its task then follows retention")
    func expiresOldDeadLetters() async throws {
        try await RedisWaitScriptTests.withDriver { store, driver, bus in
            let queries = TaskQueries(store: store)
            let keys = store.settings.keys
            let id = try await driver.submit(SubmitRequest(agent: "waiter", input: ["mode": "timeout"])).id
            _ = try await RedisWaitScriptTests.deliverLast(driver, bus)
            let error = #"{"code":"test","message":"dead-lettered by the test"}"#
            #expect(try await store.control(task: id, action: "dead", reason: "test", actor: "test", extra: error).first == "dead_lettered")
            let relay = EventRelay(store: store, bus: bus, logger: Harness.logger)
            while try await relay.round().published > 0 {}
            let fields = ["task_id": id, "reason": "retries_exhausted", "error": "test", "agent": "waiter", "body": "{}"]
            let old = try await store.recordDeadLetter(fields, now: Date(timeIntervalSinceNow: -2 * 86_400)).id
            var recent = fields
            recent["task_id"] = TestServers.uniqueName("other")
            let before = try await store.redis.serverTimeMilliseconds()
            let fresh = try await store.recordDeadLetter(recent).id
            let after = try await store.redis.serverTimeMilliseconds()
            // Scored at Redis's time of the intake (the sweep that expires it reads the same clock). Worker and Redis share
            // this host's clock here, so this checks the score's source and unit, not a skewed worker (the chaos run's
            // faketime workers take dead letters in too).
            let score = try await store.redis.send("ZSCORE", keys.dead(bucket: keys.bucket(of: fresh)), fresh).string.flatMap(Double.init)
            #expect(
                score.map { $0 >= Double(before) && $0 <= Double(after) } == true, "score \(score ?? -1), Redis time \(before)…\(after)")

            // `baton stats` counts what waits for a person exactly, whatever its age: both letters, the oldest two days old.
            let waiting = try await queries.stats(since: .seconds(60)).recovery
            #expect(waiting.pending == 2)
            #expect((waiting.oldestPendingSeconds ?? 0) > 2 * 86_400 - 60, "\(waiting.oldestPendingSeconds ?? -1)")

            let (sweeps, _, log) = OutboxSweepTests.sweeps(redis: store.redis, prefix: keys.prefix, bus: bus) {
                $0.deadLetterRetention = .seconds(86_400)
            }
            #expect(try await sweeps.expireDeadLetters())
            #expect(try await queries.deadLetter(old) == nil)
            #expect(try await queries.deadLetter(fresh) != nil, "a dead letter younger than the retention stays")
            #expect(try await sweeps.expireDeadLetters() == false)
            let audit = try await store.redis.send("XREVRANGE", keys.audit, "+", "-", "COUNT", 1)
            let entry = TaskQueries.hash(try #require(audit.array?.first?.array?.last))
            #expect(entry["action"] == "dead.expire" && entry["count"] == "1", "\(entry)")
            #expect(log.lines.withLock { $0.contains { $0.contains("discarded dead letters nobody acted on") } })

            // Its task is marked discarded, so retention deletes it like a discarded one.
            #expect(try await queries.task(id)?.status == "dead_lettered")
            #expect(try await store.purgeFinished(olderThan: .zero).purged == 1)
            #expect(try await queries.task(id) == nil)
            #expect(try await Self.keysLeft(store, id) == [])

            // 0 keeps dead letters until an operator acts.
            let (keeping, _, _) = OutboxSweepTests.sweeps(redis: store.redis, prefix: keys.prefix, bus: bus) {
                $0.deadLetterRetention = .zero
            }
            _ = try await store.recordDeadLetter(recent, now: Date(timeIntervalSinceNow: -400 * 86_400))
            #expect(try await keeping.expireDeadLetters() == false)
            #expect(try await store.expireDeadLetters(olderThan: .seconds(86_400)) == 1)
            for key in try await Harness.scanKeys(store.redis, matching: keys.prefix + "*") { _ = try await store.redis.send("DEL", key) }
        }
    }

    @Test(
        "a worker with limits.retention 1s deletes a finished task about a second after it ended; a sleeping one stays; workers silent for a day leave the registry",
        .timeLimit(.minutes(4)))
    func workerSweepDeletesFinishedTasks() async throws {
        try await WaitServers.with { servers, client in
            // A worker that crashed two days ago (never deregistered) and one silent for an hour.
            let workers = servers.settings.keys.workers
            let now = try await client.store.redis.serverTimeMilliseconds()
            _ = try await client.store.redis.send(
                "ZADD", workers, now - 2 * 86_400_000, "crashed-long-ago", now - 3_600_000, "crashed-lately")
            let worker = try await servers.startWorker(
                "retention", client: client, environment: ["BATON_LIMITS_RETENTION": "1s", "BATON_SWEEPS_RETENTION_INTERVAL": "200ms"])
            defer { worker.process.sigkill() }
            let sleeping = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("sleeper"), agent: "sleeper", input: ["seconds": 600]))
            let done = try await Harness.submit(
                client, SubmitRequest(id: TestServers.uniqueName("chain"), agent: "stepchain", input: ["steps": 3]))
            _ = try await Harness.waitForStatus(client, sleeping, ["sleeping"], workers: [worker])
            let finished = try await Harness.waitForStatus(client, done, ["succeeded"], workers: [worker])
            #expect(finished.budget.used.steps == 3)
            let gone = try await eventually(timeout: .seconds(20), interval: .milliseconds(200)) {
                try await client.queries.task(done) == nil
            }
            #expect(gone, "the finished task is still there:\n\(worker.log.suffix(2000))")
            #expect(try await Self.keysLeft(client.store, done) == [])
            let status = try await servers.cli(["status", done])
            #expect(status.status == 4)
            #expect(status.error.contains("limits.retention"), "stderr: \(status.error)")
            #expect(try await client.queries.task(sleeping)?.status == "sleeping")
            #expect(worker.log.contains("retention: deleted finished tasks"))
            // Its heartbeat dropped the worker silent for more than a day from the registry, not the other.
            let registered = try await client.queries.workers().map(\.id)
            #expect(!registered.contains("crashed-long-ago"))
            #expect(registered.contains("crashed-lately"))
            await worker.process.stop()
        }
    }
}
