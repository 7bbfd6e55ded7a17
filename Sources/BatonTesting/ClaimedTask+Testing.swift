// `ClaimedTask` has public stored properties but no public initializer, so a `TaskStore` outside the Baton
// module cannot build one. Until Baton gains `public init` on it, debug builds (where SwiftPM compiles every
// module with testability, which is how tests run) use the internal memberwise initializer; other builds
// fill a copy of a compile-time-identical layout. Both paths go away with a public initializer.
#if DEBUG
@testable import Baton
#else
import Baton
#endif

extension ClaimedTask {
    /// A claimed task with every field given.
    static func make(
        id: String, agent: String, step: String, seq: Int64, branch: Int64, attempt: Int64, token: Int64, stateJSON: [UInt8],
        inputJSON: [UInt8], limits: BudgetLimits, usage: BudgetUsage, queue: String
    ) -> ClaimedTask {
        #if DEBUG
        ClaimedTask(
            id: id, agent: agent, step: step, seq: seq, branch: branch, attempt: attempt, token: token, stateJSON: stateJSON,
            inputJSON: inputJSON, limits: limits, usage: usage, queue: queue)
        #else
        let layout = Layout(
            id: id, agent: agent, step: step, seq: seq, branch: branch, attempt: attempt, token: token, stateJSON: stateJSON,
            inputJSON: inputJSON, limits: limits, usage: usage, queue: queue)
        precondition(
            MemoryLayout<Layout>.size == MemoryLayout<ClaimedTask>.size,
            "ClaimedTask changed its stored properties: update BatonTesting's Layout (or give ClaimedTask a public init)")
        return unsafeBitCast(layout, to: ClaimedTask.self)
        #endif
    }

    #if !DEBUG
    /// The stored properties of ``ClaimedTask``, in declaration order.
    private struct Layout {
        var id: String
        var agent: String
        var step: String
        var seq: Int64
        var branch: Int64
        var attempt: Int64
        var token: Int64
        var stateJSON: [UInt8]
        var inputJSON: [UInt8]
        var limits: BudgetLimits
        var usage: BudgetUsage
        var queue: String
    }
    #endif
}
