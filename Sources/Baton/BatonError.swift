/// An error from Baton itself: what failed, and what to fix.
public struct BatonError: Error, Sendable, CustomStringConvertible {
    /// A struct around an enum, so new codes do not break users.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: String, Hashable, Sendable {
            case invalidMessage = "invalid_message"
            case unknownAgent = "unknown_agent"
            case notFound = "not_found"
            case conflict
            case configuration
            case connection
            case oversized
            case budgetExceeded = "budget_exceeded"
            case leaseLost = "lease_lost"
            case queueFull = "queue_full"
            case internalError = "internal"
        }
        let base: Base
        public static let invalidMessage = Code(base: .invalidMessage)
        public static let unknownAgent = Code(base: .unknownAgent)
        public static let notFound = Code(base: .notFound)
        public static let conflict = Code(base: .conflict)
        public static let configuration = Code(base: .configuration)
        public static let connection = Code(base: .connection)
        public static let oversized = Code(base: .oversized)
        public static let budgetExceeded = Code(base: .budgetExceeded)
        public static let leaseLost = Code(base: .leaseLost)
        public static let queueFull = Code(base: .queueFull)
        public static let internalError = Code(base: .internalError)
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    /// The field of a message or config the error is about, when there is one.
    public var field: String?

    public init(_ code: Code, _ message: String, field: String? = nil) {
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String { message }
}
