import ArgumentParser
import Baton

/// The server options every command that talks to RabbitMQ or Redis takes (DESIGN.md §7).
///
/// Precedence: the flag, else `BATON_AMQP_URL` / `BATON_REDIS_URL`, else the local servers of
/// `baton services start` (``Endpoints``).
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("amqp"), help: "RabbitMQ URL (default: $BATON_AMQP_URL, else the local node of `baton services`).")
    var amqp: String?

    @Option(name: .customLong("redis"), help: "Redis URL (default: $BATON_REDIS_URL, else the local Redis of `baton services`).")
    var redis: String?

    /// The AMQP URL to use.
    var amqpURL: String { Endpoints.amqpURL(flag: amqp) }

    /// The Redis URL to use.
    var redisURL: String { Endpoints.redisURL(flag: redis) }
}
