import Configuration

extension WebhookSettings {
    /// Reads the `webhooks.*` keys.
    ///
    /// | key | default |
    /// |---|---|
    /// | `webhooks.secret` | none (deliveries fail until set) |
    /// | `webhooks.previous_secret` | none |
    /// | `webhooks.allow_hosts` | [] |
    /// | `webhooks.retry_schedule` | [5s, 5m, 30m, 2h, 5h, 10h, 10h, 10h, 10h, 12h, 12h] |
    /// | `webhooks.timeout` | 10s |
    /// | `webhooks.concurrency` | 16 |
    public init(reader: ConfigReader) throws {
        self.init()
        secret = reader.batonText(ConfigKeys.webhooksSecret)
        previousSecret = reader.batonText(ConfigKeys.webhooksPreviousSecret)
        allowHosts = reader.batonList(ConfigKeys.webhooksAllowHosts) ?? []
        if let schedule = reader.batonList(ConfigKeys.webhooksRetrySchedule) {
            retrySchedule = try schedule.map { text in
                guard let value = DurationText.parse(text) else {
                    throw ConfigReader.invalid(ConfigKeys.webhooksRetrySchedule, text, "a list of durations (e.g. [5s, 5m, 30m])")
                }
                return value
            }
        }
        timeout = try reader.batonDuration(ConfigKeys.webhooksTimeout, default: timeout, minimum: .milliseconds(100))
        concurrency = try reader.batonInt(ConfigKeys.webhooksConcurrency, default: concurrency, range: 1...1000)
    }
}
