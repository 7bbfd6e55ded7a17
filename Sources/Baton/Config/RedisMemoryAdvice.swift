/// What `baton doctor` says about the Redis setting that decides most of a task's memory (docs/operations.md,
/// "Redis settings for production").
///
/// A hash stays in Redis's compact listpack encoding while each of its values is at most `hash-max-listpack-value`
/// bytes (64 by default). A task hash holds a wait's descriptor (~100–120 bytes) and the task's input, so with the
/// default it becomes a hashtable: `baton bench idle` measured ~3.8 KB per waiting task with Redis's defaults against
/// ~2.4 KB with 128 (docs/benchmarks.md, twenty-first session).
public enum RedisMemoryAdvice {
    /// The value `baton services` runs Redis with and `baton doctor` recommends.
    public static let recommendedHashListpackValue = 128

    /// The warning for `value` (what `CONFIG GET hash-max-listpack-value` answered), or nil when it is at least
    /// ``recommendedHashListpackValue``.
    public static func hashListpackValueWarning(_ value: String) -> String? {
        if let bytes = Int(value), bytes >= recommendedHashListpackValue { return nil }
        return "hash-max-listpack-value \(value): a task hash with a longer value (a wait's descriptor, an input) leaves the "
            + "compact listpack encoding, about 2.3 times the memory (baton bench idle: ~3.8 KB instead of ~2.4 KB per waiting task)"
    }
}
