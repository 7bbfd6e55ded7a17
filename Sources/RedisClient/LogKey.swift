/// The log metadata keys of this module, in one place.
enum LogKey {
    static let url = "redis.url"
    static let command = "redis.command"
    static let failures = "redis.connect_failures"
    static let error = "error"
}
