#if canImport(Glibc)
import Glibc
#endif

/// jemalloc for the long-running commands, by default.
///
/// A step hop makes a few hundred short-lived allocations. With glibc's `malloc` a worker spends ~17 % of its CPU in
/// the allocator; with jemalloc it uses ~9 % less CPU per hop (docs/benchmarks.md). Linking jemalloc is not an
/// option: a linked jemalloc deadlocks at start-up under libfaketime (docs/design-decisions.md, tenth session). So
/// `baton worker`, `serve`, `bench` and `demo` re-execute themselves once, at start, with jemalloc in `LD_PRELOAD`,
/// when:
/// - `BATON_ALLOCATOR` is unset or `jemalloc` (`system` keeps glibc's `malloc`);
/// - `LD_PRELOAD` is unset or empty (whoever set it, `faketime` say, keeps exactly what they chose);
/// - jemalloc is installed (`libjemalloc2`, a dependency of Debian's `redis-server`; `BATON_JEMALLOC` names another
///   path).
///
/// The process keeps its pid (`execve`). The re-executed process takes `LD_PRELOAD` out of its environment again,
/// so the servers and workers it starts choose for themselves. When anything fails, the command runs as it is.
enum Allocator {
    /// The commands that run long enough for the allocator to matter.
    static let longRunning: Set<String> = ["worker", "serve", "bench", "demo"]
    static let candidates = [
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2",
        "/usr/lib/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2",
    ]
    /// Set by the re-execution to the path it preloaded; the re-executed process removes it and `LD_PRELOAD`.
    static let marker = "BATON_ALLOCATOR_PRELOADED"

    /// What to do for `arguments` (the command line without the executable) in `environment`: the library to
    /// preload, or nil to run as is.
    static func preload(arguments: [String], environment: [String: String], exists: (String) -> Bool) -> String? {
        guard let command = arguments.first(where: { !$0.hasPrefix("-") }), longRunning.contains(command) else { return nil }
        guard environment[marker] == nil, (environment["LD_PRELOAD"] ?? "").allSatisfy(\.isWhitespace) else { return nil }
        switch environment["BATON_ALLOCATOR"]?.lowercased() {
        case nil, "", "jemalloc": break
        default: return nil
        }
        if let path = environment["BATON_JEMALLOC"], !path.isEmpty { return exists(path) ? path : nil }
        return candidates.first(where: exists)
    }

    /// Called first thing in `main`: re-executes the process with jemalloc preloaded (this call then never returns), or
    /// tidies the environment of a process that was.
    static func prepare() {
        #if os(Linux)
        if let preloaded = getenv(marker).map({ String(cString: $0) }) {
            unsetenv(marker)
            if let current = getenv("LD_PRELOAD").map({ String(cString: $0) }), current == preloaded { unsetenv("LD_PRELOAD") }
            return
        }
        var environment: [String: String] = [:]
        for name in ["BATON_ALLOCATOR", "BATON_JEMALLOC", "LD_PRELOAD", marker] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let library = preload(arguments: arguments, environment: environment, exists: { access($0, R_OK) == 0 }) else { return }
        setenv("LD_PRELOAD", library, 1)
        setenv(marker, library, 1)
        // `/proc/self/exe` is this very binary, whatever `argv[0]` says; argv and the rest of the environment as they are.
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Still here: the exec failed. Run with the allocator we have, and leave the environment as it was.
        unsetenv("LD_PRELOAD")
        unsetenv(marker)
        #endif
    }
}
