import Baton
import Foundation

/// Runs `rabbitmqctl` against the node that `baton services start` runs (its node name and cookie folder).
public enum RabbitControl {
    public static var nodeName: String { ProcessInfo.processInfo.environment["BATON_RABBITMQ_NODE"] ?? "baton@localhost" }

    /// Runs `rabbitmqctl -n <node> <arguments>` and returns its exit status and standard output.
    @discardableResult
    public static func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let directory = LocalServices.Configuration.defaultDirectory()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/lib/rabbitmq/bin/rabbitmqctl")
        process.arguments = ["-n", nodeName] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = directory + "/rabbitmq/home"
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Read and wait on a thread of its own: blocking a cooperative-pool thread (two on this box) for the whole
        // rabbitmqctl run stalled unrelated tests running in parallel.
        let running = process
        let output = pipe
        let data: Data = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let data = output.fileHandleForReading.readDataToEndOfFile()
                running.waitUntilExit()
                continuation.resume(returning: data)
            }
        }
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Closes every broker connection whose `connection_name` is `name`; returns how many it closed.
    public static func closeConnections(named name: String) async throws -> Int {
        let (_, output) = try await run(["list_connections", "--no-table-headers", "--silent", "pid", "client_properties"])
        var closed = 0
        for line in output.split(separator: "\n") where line.contains("\"\(name)\"") {
            guard let pid = line.split(separator: "\t").first else { continue }
            let (status, _) = try await run(["close_connection", String(pid), "closed by a Baton test"])
            if status == 0 { closed += 1 }
        }
        return closed
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(20), interval: Duration = .milliseconds(50), _ condition: () async throws -> Bool)
    async rethrows -> Bool
{
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
