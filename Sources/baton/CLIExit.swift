import AMQPClient
import ArgumentParser
import Baton
import Foundation
import RedisClient

/// The exit codes of `baton` (DESIGN.md §7).
enum CLIExit {
    /// The operation failed.
    static let failed: Int32 = 1
    /// A connection or configuration error; the message names what to fix.
    static let configuration: Int32 = 2
    /// `submit --wait` (or `watch`) ended in a status other than `succeeded`.
    static let notSucceeded: Int32 = 3
    /// The task or dead letter does not exist.
    static let notFound: Int32 = 4
    /// The task's state forbids the action.
    static let conflict: Int32 = 5
    /// A usage error: ArgumentParser's `ValidationError` and parse errors already exit with `EX_USAGE` (64).
    static let usage: Int32 = 64

    /// What a command that names a missing task says (it may have ended longer than `limits.retention` ago).
    static func noTask(_ id: String) -> String {
        "no task '\(id)' (a finished task is deleted limits.retention after it ended, 7 days by default)"
    }

    /// Maps an error that escaped a command to what `main` exits with: errors of the server clients become
    /// exit code 2 (connection) or 1 with their message on stderr; ArgumentParser's own errors pass unchanged.
    static func map(_ error: any Error) -> any Error {
        switch error {
        case let error as BatonError:
            Terminal.error(error.message)
            switch error.code {
            case .connection, .configuration: return ExitCode(configuration)
            case .notFound: return ExitCode(notFound)
            case .conflict: return ExitCode(conflict)
            default: return ExitCode(failed)
            }
        case let error as RedisError:
            Terminal.error("\(error)")
            return ExitCode(isConnection(error) ? configuration : failed)
        case let error as AMQPError:
            Terminal.error("\(error)")
            return ExitCode(isConnection(error) ? configuration : failed)
        default:
            return error
        }
    }

    static func isConnection(_ error: RedisError) -> Bool {
        [.connectionFailed, .authenticationFailed, .connectionLost, .timeout, .invalidURL, .closed].contains(error.code)
    }

    static func isConnection(_ error: AMQPError) -> Bool {
        [.connectionFailed, .accessRefused, .connectionLost, .notConnected, .invalidURL, .timeout, .closed].contains(error.code)
    }
}
