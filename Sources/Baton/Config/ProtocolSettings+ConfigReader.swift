import Configuration

extension ProtocolSettings {
    /// Reads the step-protocol settings.
    ///
    /// | key | default |
    /// |---|---|
    /// | `worker.lease` | 15s (≥ 1s) |
    /// | `worker.time_slice` | 60s |
    /// | `worker.state_cache` | 1024 (0…1000000) |
    /// | `worker.speculative_steps` | true |
    /// | `limits.checkpoint_max_bytes` | 1048576 |
    /// | `limits.submit_max_bytes` | 1048576 |
    /// | `limits.max_children` | 100 (0…10000) |
    /// | `budget.default_max_cost_usd` | ~ (none) |
    /// | `budget.default_max_tokens` | ~ (none) |
    /// | `budget.default_max_steps` | 10000 |
    /// | `budget.default_max_tool_calls` | 10000 |
    /// | `budget.default_max_handoffs` | 1000 |
    /// | `budget.default_max_attempts` | 5 |
    ///
    /// - Throws: a ``BatonError`` (code `configuration`, `field` = the key) for a value out of range.
    public init(reader: ConfigReader) throws {
        self.init()
        lease = try reader.batonDuration(ConfigKeys.workerLease, default: lease, minimum: .seconds(1))
        timeSlice = try reader.batonDuration(ConfigKeys.workerTimeSlice, default: timeSlice)
        stateCacheEntries = try reader.batonInt(ConfigKeys.workerStateCache, default: stateCacheEntries, range: 0...1_000_000)
        speculativeSteps = try reader.batonBool(ConfigKeys.workerSpeculativeSteps, default: speculativeSteps)
        checkpointMaxBytes = try reader.batonInt(ConfigKeys.limitsCheckpointMaxBytes, default: checkpointMaxBytes, range: 1...(512 << 20))
        submitMaxBytes = try reader.batonInt(ConfigKeys.limitsSubmitMaxBytes, default: submitMaxBytes, range: 1...(512 << 20))
        maxChildren = try reader.batonInt(ConfigKeys.limitsMaxChildren, default: maxChildren, range: 0...10_000)
        var limits = defaultLimits
        limits.maxCostMicros = try reader.batonDollars(
            ConfigKeys.budgetDefaultMaxCostUSD, default: limits.maxCostMicros.map { Double($0) / 1_000_000 }
        ).map(Charge.micros(fromUSD:))
        limits.maxTokens = try reader.batonLimit(ConfigKeys.budgetDefaultMaxTokens, default: limits.maxTokens)
        limits.maxSteps = try reader.batonLimit(ConfigKeys.budgetDefaultMaxSteps, default: limits.maxSteps)
        limits.maxToolCalls = try reader.batonLimit(ConfigKeys.budgetDefaultMaxToolCalls, default: limits.maxToolCalls)
        limits.maxHandoffs = try reader.batonLimit(ConfigKeys.budgetDefaultMaxHandoffs, default: limits.maxHandoffs)
        limits.maxAttempts = try reader.batonLimit(ConfigKeys.budgetDefaultMaxAttempts, default: limits.maxAttempts)
        defaultLimits = limits
    }
}
