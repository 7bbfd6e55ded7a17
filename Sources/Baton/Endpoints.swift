import Foundation

/// Where Baton finds RabbitMQ and Redis when nothing else says so.
///
/// Precedence (DESIGN.md §7): an explicit flag > the environment (`BATON_AMQP_URL`, `BATON_REDIS_URL`)
/// > the local servers started by `baton services start` (their ports are the defaults below).
public enum Endpoints {
    /// The AMQP port of the node that `baton services start` runs (not 5672, so it never clashes with a
    /// system RabbitMQ).
    public static let localAMQPPort = 5673
    /// The port of the Redis that `baton services start` runs (not 6379, for the same reason).
    public static let localRedisPort = 6390

    public static let localAMQPURL = "amqp://guest:guest@127.0.0.1:\(localAMQPPort)/"
    public static let localRedisURL = "redis://127.0.0.1:\(localRedisPort)/0"

    /// The AMQP URL to use: `flag`, else `BATON_AMQP_URL`, else the local servers'.
    public static func amqpURL(flag: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let flag, !flag.isEmpty { return flag }
        if let env = environment["BATON_AMQP_URL"], !env.isEmpty { return env }
        return localAMQPURL
    }

    /// The Redis URL to use: `flag`, else `BATON_REDIS_URL`, else the local servers'.
    public static func redisURL(flag: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let flag, !flag.isEmpty { return flag }
        if let env = environment["BATON_REDIS_URL"], !env.isEmpty { return env }
        return localRedisURL
    }
}
