/// An error from ``AMQPConnection`` or ``AMQPChannel``: what failed, the broker's own words, and what to fix.
///
/// Messages never contain a password: URLs are always shown redacted (`amqp://user:***@host:port/vhost`).
public struct AMQPError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is. A struct around an enum, so that new codes do not break users.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: String, Hashable, Sendable {
            case invalidURL, invalidArgument, connectionFailed, accessRefused, connectionLost, notConnected
            case channelError, connectionError, unroutable, nacked, timeout, closed, staleDelivery, protocolError
        }
        let base: Base
        /// The URL could not be parsed.
        public static let invalidURL = Code(base: .invalidURL)
        /// An argument was refused before anything was sent (for example a name longer than 255 bytes).
        public static let invalidArgument = Code(base: .invalidArgument)
        /// The TCP connection or the AMQP handshake failed.
        public static let connectionFailed = Code(base: .connectionFailed)
        /// The broker refused the credentials or the virtual host.
        public static let accessRefused = Code(base: .accessRefused)
        /// The connection broke while the operation was in flight; its outcome is unknown.
        public static let connectionLost = Code(base: .connectionLost)
        /// The connection is down and reconnecting; nothing was sent.
        public static let notConnected = Code(base: .notConnected)
        /// The broker closed the channel (the server's code and text are in ``AMQPError/serverCode``/``AMQPError/serverText``).
        public static let channelError = Code(base: .channelError)
        /// The broker closed the connection.
        public static let connectionError = Code(base: .connectionError)
        /// A `mandatory` message could not be routed to any queue (basic.return).
        public static let unroutable = Code(base: .unroutable)
        /// The broker refused to take responsibility for a message (basic.nack), e.g. a full queue with `reject-publish`.
        public static let nacked = Code(base: .nacked)
        /// The broker did not answer in time.
        public static let timeout = Code(base: .timeout)
        /// The connection or channel was closed by this process.
        public static let closed = Code(base: .closed)
        /// An ack/nack/reject for a delivery from an earlier channel or connection incarnation: the broker
        /// will redeliver the message, so there is nothing left to acknowledge.
        public static let staleDelivery = Code(base: .staleDelivery)
        /// The broker sent something this client did not expect.
        public static let protocolError = Code(base: .protocolError)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The AMQP operation that failed, e.g. `queue.declare 'jobs'`.
    public var operation: String
    /// The reply code the broker sent (e.g. 406), when it sent one.
    public var serverCode: UInt16?
    /// The broker's own words, when it sent any.
    public var serverText: String?
    /// The broker endpoint, with the password redacted.
    public var endpoint: String?
    /// What to do about it.
    public var fix: String

    public init(
        _ code: Code, operation: String, serverCode: UInt16? = nil, serverText: String? = nil, endpoint: String? = nil,
        fix: String
    ) {
        self.code = code
        self.operation = operation
        self.serverCode = serverCode
        self.serverText = serverText
        self.endpoint = endpoint
        self.fix = fix
    }

    public var description: String {
        var text = "AMQP \(operation) failed"
        if let endpoint { text += " at \(endpoint)" }
        text += " (\(code)"
        if let serverCode { text += " \(serverCode)" }
        if let serverText, !serverText.isEmpty { text += ": \(serverText)" }
        text += ")"
        if !fix.isEmpty { text += ": \(fix)" }
        return text
    }
}
