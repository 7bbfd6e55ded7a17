import ArgumentParser
import Baton
import Foundation

/// The server and configuration options every command that talks to RabbitMQ or Redis takes (DESIGN.md §7).
///
/// Precedence: the flag, else `BATON_AMQP_URL` / `BATON_REDIS_URL`, else `amqp.url` / `redis.url` of the
/// configuration file, else the local servers of `baton services start` (``Endpoints``).
struct ConnectionOptions: ParsableArguments {
    @Option(
        name: .customLong("amqp"), help: "RabbitMQ URL (default: $BATON_AMQP_URL, else amqp.url of the config file, else the local node).")
    var amqp: String?

    @Option(
        name: .customLong("redis"), help: "Redis URL (default: $BATON_REDIS_URL, else redis.url of the config file, else the local Redis).")
    var redis: String?

    @Option(
        name: .customLong("config"),
        help: ArgumentHelp(
            "The YAML configuration file (default: $BATON_CONFIG, else Config/baton.yaml when it exists).", valueName: "path"))
    var config: String?

    /// The AMQP URL from the flag and the environment only (for commands that do not load the configuration).
    var amqpURL: String { Endpoints.amqpURL(flag: amqp) }

    /// The Redis URL from the flag and the environment only (for commands that do not load the configuration).
    var redisURL: String { Endpoints.redisURL(flag: redis) }

    /// Loads the configuration with these flags and `overrides` (more flags, by key) on top; a bad file, key or
    /// value is printed and becomes exit code 2.
    func load(overrides: [String: String] = [:]) async throws -> BatonConfiguration {
        var values = overrides
        if let amqp, !amqp.isEmpty { values[ConfigKeys.amqpURL] = amqp }
        if let redis, !redis.isEmpty { values[ConfigKeys.redisURL] = redis }
        do {
            return try await BatonConfiguration.load(file: config, overrides: values)
        } catch let error as BatonError {
            Terminal.error("configuration: \(error.message)")
            throw ExitCode(CLIExit.configuration)
        }
    }
}

/// The options every command takes (DESIGN.md §7): servers and configuration, and how results are printed.
struct GlobalOptions: ParsableArguments {
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
}
