import Foundation
import Logging

/// Logging for the `baton` executable: every log line goes to stderr; stdout is for results only
/// (`eval "$(baton services start)"`, `--json`).
enum CLILogging {
    /// Bootstraps swift-log once, at the level of `BATON_LOG_LEVEL` (trace … critical; default `info`).
    static func bootstrap(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let level = environment["BATON_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// Writes messages meant for a person to stderr.
enum Terminal {
    static func note(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }

    static func error(_ message: String) {
        note("error: " + message)
    }
}
