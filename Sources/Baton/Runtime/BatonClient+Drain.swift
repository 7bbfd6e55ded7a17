import Foundation
import RedisClient

extension BatonClient {
    /// Writes the drain request into the live worker's registry hash (field `drain`: `{"actor", "reason",
    /// "requested_at"}`, time from Redis); answers 1, or 0 when no such worker is registered.
    static let drainScript = RedisScript(
        """
        if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false or redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('HSET', KEYS[2], 'drain', cjson.encode({actor = ARGV[2], reason = ARGV[3], requested_at = now}))
        return 1
        """)

    /// Asks a worker to drain: at its next heartbeat it stops taking deliveries, lets running steps finish or
    /// yield within its drain timeout (as at SIGTERM), deregisters and exits. The request is durable in Redis (the
    /// worker's registry hash) until the worker honours it; audited as `worker.drain`. Returns false when no
    /// worker with this id is registered.
    public func requestDrain(worker id: String, actor: String, reason: String) async throws -> Bool {
        let keys = store.settings.keys
        let answer = try await redis.evalSHA(Self.drainScript, keys: [keys.workers, keys.worker(id)], args: [id, actor, reason])
        guard answer.int == 1 else { return false }
        try await queries.audit(actor: actor, action: "worker.drain", target: id, reason: reason)
        return true
    }
}
