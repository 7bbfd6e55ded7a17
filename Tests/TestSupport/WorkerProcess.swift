import Baton
import Foundation
import Synchronization

/// A real child process for integration tests: a `baton worker`, a `baton` CLI command, a Python client.
///
/// Spawned with `posix_spawn`, an empty signal mask and default signal handlers (a child of a Swift
/// concurrency thread spawned with Foundation's `Process` inherits SIGTERM/SIGCHLD blocked, so SIGTERM does
/// nothing), and reaped by `waitpid` on a thread of its own. Signals are only sent while the child is not
/// yet reaped, so a recycled pid is never hit.
public final class WorkerProcess: Sendable {
    public let pid: pid_t
    /// Where the child's standard output goes.
    public let outputFile: String
    /// Where the child's standard error goes (the same file as ``outputFile`` unless told otherwise).
    public let errorFile: String
    /// The exit status once reaped: the exit code, or 128 + the signal number.
    private let status = Mutex<Int32?>(nil)

    private init(pid: pid_t, outputFile: String, errorFile: String) {
        self.pid = pid
        self.outputFile = outputFile
        self.errorFile = errorFile
    }

    /// Starts `executable` with stdin from `/dev/null`, stdout into `outputFile` and stderr into `errorFile`
    /// (default: `outputFile`). `environment` nil = this process's environment.
    public static func start(
        executable: String, arguments: [String], environment: [String: String]? = nil, outputFile: String, errorFile: String? = nil
    ) throws -> WorkerProcess {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let pid: pid_t
        do {
            pid = try ChildProcess.spawn(
                executable, arguments, environment: environment.map { "\($0.key)=\($0.value)" }, outputFile: outputFile,
                errorFile: errorFile)
        } catch {
            throw SpawnError(message: "\(error)")
        }
        let process = WorkerProcess(pid: pid, outputFile: outputFile, errorFile: errorFile ?? outputFile)
        let reaper = Thread { process.reap() }
        reaper.start()
        return process
    }

    /// Waits (blocking, on the reaper thread) until the child exits, then reaps it under the lock that
    /// ``signal(_:)`` takes, so no signal goes to a pid after it was reaped.
    private func reap() {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) == -1 && errno == EINTR {}
        status.withLock { status in
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) == -1 && errno == EINTR {}
            let signal = raw & 0x7f
            status = signal == 0 ? (raw >> 8) & 0xff : 128 + signal
        }
    }

    /// The exit status, or nil while the child runs.
    public var exitStatus: Int32? { status.withLock { $0 } }
    public var isRunning: Bool { exitStatus == nil }

    /// Sends `signal` unless the child was already reaped; returns whether it was sent.
    @discardableResult
    public func signal(_ signal: Int32) -> Bool {
        status.withLock { status in status == nil && kill(pid, signal) == 0 }
    }

    @discardableResult public func sigkill() -> Bool { signal(SIGKILL) }
    @discardableResult public func sigterm() -> Bool { signal(SIGTERM) }

    /// Waits up to `timeout` for the child to exit; returns its exit status, or nil if it still runs.
    public func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = exitStatus { return status }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return exitStatus
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; returns the exit status.
    @discardableResult
    public func stop(grace: Duration = .seconds(10)) async -> Int32? {
        sigterm()
        if let status = await waitForExit(timeout: grace) { return status }
        sigkill()
        return await waitForExit(timeout: .seconds(5))
    }

    /// What the child wrote to its standard output so far.
    public var output: String { (try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? "" }
    /// What the child wrote to its standard error so far.
    public var errorOutput: String { (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? "" }

    /// Runs a command to its end (SIGKILL after `timeout`); returns its exit status, stdout and stderr.
    public static func run(
        executable: String, arguments: [String], environment: [String: String]? = nil, timeout: Duration = .seconds(60)
    ) async throws -> (status: Int32, output: String, error: String) {
        let directory = try TestFiles.directory()
        let name = TestServers.uniqueName("run")
        let process = try start(
            executable: executable, arguments: arguments, environment: environment, outputFile: directory + "/\(name).out",
            errorFile: directory + "/\(name).err")
        var status = await process.waitForExit(timeout: timeout)
        if status == nil {
            process.sigkill()
            status = await process.waitForExit(timeout: .seconds(5))
        }
        return (status ?? -1, process.output, process.errorOutput)
    }
}

public struct SpawnError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Files that integration tests write: worker logs, effect logs, command output.
public enum TestFiles {
    private static let root: String = {
        let path = NSTemporaryDirectory() + "baton-tests-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    /// A folder of this test process's files (created on first use).
    public static func directory() throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw SpawnError(message: "cannot create the test folder \(root)")
        }
        return root
    }

    /// A fresh path in that folder (nothing is created).
    public static func path(_ name: String) throws -> String { try directory() + "/" + TestServers.uniqueName(name) }
}

/// The `baton` executable that `swift build` built next to the test bundle.
public enum BatonBinary {
    /// `.build/<triple>/debug/baton`: found next to the test executable, else under the package root.
    public static let path: String? = {
        var candidates: [String] = []
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append(URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("baton").path)
        }
        if let first = CommandLine.arguments.first {
            let url = URL(fileURLWithPath: first).standardizedFileURL
            candidates.append(url.deletingLastPathComponent().appendingPathComponent("baton").path)
            // On macOS the test bundle is a directory: <bin>/X.xctest/Contents/MacOS/X.
            candidates.append(
                url.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                    .appendingPathComponent("baton").path)
        }
        candidates.append(packageRoot + "/.build/debug/baton")
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// The package's root folder (where `Package.swift` is), from this source file's path.
    public static let packageRoot: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
}
