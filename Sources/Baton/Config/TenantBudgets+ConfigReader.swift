import Configuration

extension TenantBudgets {
    /// The per-day limit keys under `tenants.<name>.`.
    static let costKey = "max_cost_usd_per_day"
    static let tokensKey = "max_tokens_per_day"

    /// Reads the daily limits of `tenants`.
    ///
    /// | key | default |
    /// |---|---|
    /// | `tenants.<name>.max_cost_usd_per_day` | none |
    /// | `tenants.<name>.max_tokens_per_day` | none |
    ///
    /// Tenant names come from the YAML file's keys and from environment variables
    /// `BATON_TENANTS_<NAME>_MAX_COST_USD_PER_DAY` / `…_MAX_TOKENS_PER_DAY` (the name lower-cased there: a tenant
    /// whose name has capitals or characters an environment variable cannot carry is configured in the file).
    public init(reader: ConfigReader, tenants: Set<String>) throws {
        var limits: [String: Limits] = [:]
        for tenant in tenants {
            let cost = try reader.batonDollars("tenants.\(tenant).\(Self.costKey)", default: nil)
            let tokens = try reader.batonLimit("tenants.\(tenant).\(Self.tokensKey)", default: nil)
            limits[tenant] = Limits(maxCostMicrosPerDay: cost.map(Charge.micros(fromUSD:)), maxTokensPerDay: tokens)
        }
        self.init(limits)
    }

    /// The tenant of a key `tenants.<name>.max_cost_usd_per_day` (or `…max_tokens_per_day`), else nil.
    static func tenantName(ofKey key: String) -> String? {
        let parts = key.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "tenants", [costKey, tokensKey].contains(String(parts[2])),
            TaskID.isValidName(String(parts[1]))
        else { return nil }
        return String(parts[1])
    }

    /// The tenant (lower-cased) of `BATON_TENANTS_<NAME>_MAX_COST_USD_PER_DAY` (or `…_MAX_TOKENS_PER_DAY`), else nil.
    static func tenantName(ofEnvironmentName name: String) -> String? {
        let prefix = "BATON_TENANTS_"
        guard name.hasPrefix(prefix) else { return nil }
        for suffix in ["_" + costKey.uppercased(), "_" + tokensKey.uppercased()] where name.hasSuffix(suffix) {
            let middle = name.dropFirst(prefix.count).dropLast(suffix.count)
            guard !middle.isEmpty else { return nil }
            let tenant = middle.lowercased()
            return TaskID.isValidName(tenant) ? tenant : nil
        }
        return nil
    }
}
