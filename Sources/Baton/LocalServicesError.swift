/// Why ``LocalServices`` could not start, stop or inspect a local server; the message says what to do.
public struct LocalServicesError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        enum Kind: String, Sendable {
            case notInstalled = "not_installed"
            case portInUse = "port_in_use"
            case startFailed = "start_failed"
            case timedOut = "timed_out"
            case stopFailed = "stop_failed"
            case io
        }

        let kind: Kind

        /// A server program is missing; the message names the Debian package to install.
        public static let notInstalled = Code(kind: .notInstalled)
        /// Another program holds the port a server should listen on.
        public static let portInUse = Code(kind: .portInUse)
        /// A server or its launcher exited while starting; the message names its log file.
        public static let startFailed = Code(kind: .startFailed)
        /// A server did not answer within the start timeout; the message names its log file.
        public static let timedOut = Code(kind: .timedOut)
        /// A server that Baton started could not be stopped.
        public static let stopFailed = Code(kind: .stopFailed)
        /// A file or folder of the services directory could not be read or written.
        public static let io = Code(kind: .io)

        /// A stable snake_case name, for logs and JSON.
        public var description: String { kind.rawValue }

        /// True for failures that a user fixes by installing or configuring something (exit code 2 in the CLI).
        public var isConfigurationError: Bool { kind == .notInstalled || kind == .portInUse || kind == .io }
    }

    /// The kind of failure.
    public var code: Code
    /// The server concerned, when there is one.
    public var service: LocalServices.Service?
    /// What went wrong and what to do about it.
    public var message: String

    /// Creates an error.
    public init(code: Code, service: LocalServices.Service?, message: String) {
        self.code = code
        self.service = service
        self.message = message
    }

    /// The message.
    public var description: String { message }
}
