import ArgumentParser

@main
struct BatonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "baton", abstract: "Durable, budgeted, long-running AI-agent tasks on RabbitMQ and Redis.")
}
