import Baton
import Foundation
import TestSupport
import Testing

extension IntegrationTests {
    // MARK: The allocator of `baton worker`

    /// The shared libraries mapped into process `pid`, by file name (read from `/proc`, not from what the process says).
    static func mappedLibraries(_ pid: pid_t) throws -> Set<String> {
        let file = try #require(FileHandle(forReadingAtPath: "/proc/\(pid)/maps"), "no /proc/\(pid)/maps")
        defer { try? file.close() }
        let maps = String(decoding: try file.readToEnd() ?? Data(), as: UTF8.self)
        // Only the lines that map a file (its path starts with "/"); the file name is what follows the last "/".
        return Set(
            maps.split(separator: "\n").compactMap { line in line.contains(" /") ? line.split(separator: "/").last.map(String.init) : nil })
    }

    static let jemallocPaths = ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"]
    /// A library of the user's own to preload: one that `baton` does not link (libbz2, installed on every Debian).
    static let userLibrary = "/usr/lib/x86_64-linux-gnu/libbz2.so.1"

    @Test("A worker runs on jemalloc when it is installed, keeps its pid, and says so in its start-up line", .timeLimit(.minutes(1)))
    func workerPreloadsJemalloc() async throws {
        let installed = try #require(
            Self.jemallocPaths.first { FileManager.default.fileExists(atPath: $0) },
            "jemalloc is not installed (scripts/test installs redis-server, which depends on libjemalloc2)")
        let inherited = ProcessInfo.processInfo.environment
        try #require(
            inherited["BATON_ALLOCATOR"] == nil && inherited["BATON_JEMALLOC"] == nil && (inherited["LD_PRELOAD"] ?? "").isEmpty,
            "the test runs with BATON_ALLOCATOR, BATON_JEMALLOC or LD_PRELOAD set, which its workers inherit")
        try await Harness.withClient { client in
            // The pid the test spawned is the pid that registered: the re-execution keeps it.
            let worker = try await Harness.startWorker("alloc-default", client: client)
            defer { worker.process.sigkill() }
            let libraries = try Self.mappedLibraries(worker.process.pid)
            #expect(libraries.contains((installed as NSString).lastPathComponent), "\(libraries.sorted())")
            #expect(worker.log.contains("allocator=jemalloc"), "\(worker.log.suffix(2000))")
        }
    }

    @Test("BATON_ALLOCATOR=system, or an LD_PRELOAD of the user's own, leaves glibc's malloc", .timeLimit(.minutes(1)))
    func workerKeepsTheSystemAllocatorWhenAskedOrPreloaded() async throws {
        try await Harness.withClient { client in
            let system = try await Harness.startWorker("alloc-system", client: client, environment: ["BATON_ALLOCATOR": "system"])
            defer { system.process.sigkill() }
            #expect(!(try Self.mappedLibraries(system.process.pid)).contains { $0.hasPrefix("libjemalloc") })
            #expect(system.log.contains("allocator=system"), "\(system.log.suffix(2000))")

            // What faketime does: its library in LD_PRELOAD (jemalloc with libfaketime deadlocks at start-up). The
            // worker keeps exactly the user's preload, and starts.
            try #require(FileManager.default.fileExists(atPath: Self.userLibrary), "\(Self.userLibrary) is not installed")
            let preloaded = try await Harness.startWorker("alloc-preload", client: client, environment: ["LD_PRELOAD": Self.userLibrary])
            defer { preloaded.process.sigkill() }
            let libraries = try Self.mappedLibraries(preloaded.process.pid)
            #expect(libraries.contains { $0.hasPrefix("libbz2.so") }, "\(libraries.sorted())")
            #expect(!libraries.contains { $0.hasPrefix("libjemalloc") }, "\(libraries.sorted())")
            #expect(preloaded.log.contains("allocator=system"), "\(preloaded.log.suffix(2000))")
        }
    }
}
