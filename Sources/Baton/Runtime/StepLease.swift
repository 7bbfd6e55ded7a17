import Synchronization

/// The lease one running step holds, as its fencing token.
///
/// A claimed step holds its token from the start. A *speculative* step (``StepExecutor``: run from this worker's own
/// sticky state, without a claim, right after this worker committed the task's previous step) holds none: its commit
/// checks in the same script that nothing happened since that commit. It claims the lease only when it needs one
/// ("claims late"): before its first store call (a side effect, a tenant charge, progress), at its first lease renewal
/// (a step running longer than a third of the lease), or when its commit cannot go through speculatively. One late
/// claim at a time: the callers that need it meanwhile wait for its answer.
final class StepLease: Sendable {
    private struct State {
        var token: Int64
        var speculative: Bool
        /// The late claim's outcome when it did not give the step to this worker (or could not be made).
        var refused: Result<ClaimOutcome, any Error>?
        var claiming: Task<Void, Never>?
        /// The task's limits as the late claim read them.
        var limits: BudgetLimits?
    }

    private let state: Mutex<State>
    private let claim: (@Sendable () async -> Result<ClaimOutcome, any Error>)?

    /// A claimed step's lease.
    init(token: Int64) {
        state = Mutex(State(token: token, speculative: false))
        claim = nil
    }

    /// A speculative step's: `token` is the fencing token of this worker's commit of the previous step (what the
    /// speculative commit expects to find); `claim` claims the step's message (with the state cached).
    init(speculativeAfter token: Int64, claim: @escaping @Sendable () async -> Result<ClaimOutcome, any Error>) {
        state = Mutex(State(token: token, speculative: true))
        self.claim = claim
    }

    /// The current token: the claimed lease's, or (speculative) the one the commit expects.
    var token: Int64 { state.withLock { $0.token } }

    /// The token and whether the step is still speculative, read together (a late claim may land between two reads).
    var snapshot: (token: Int64, speculative: Bool) { state.withLock { ($0.token, $0.speculative) } }

    /// The task's limits as the late claim read them (nil: no late claim): fresher than those the step started with.
    var claimedLimits: BudgetLimits? { state.withLock { $0.limits } }

    /// True while the step runs without a claim.
    var isSpeculative: Bool { state.withLock { $0.speculative } }

    /// Why a late claim did not give the step to this worker, when it did not.
    var refusal: Result<ClaimOutcome, any Error>? { state.withLock { $0.refused } }

    /// The token of a claimed lease, claiming it first when the step is speculative; nil when the late claim did not
    /// give the step to this worker (see ``refusal``): the step's work is not this worker's to commit.
    func claimed() async -> Int64? {
        while true {
            enum Next {
                case token(Int64?)
                case wait(Task<Void, Never>)
            }
            let next = state.withLock { state -> Next in
                if state.refused != nil { return .token(nil) }
                if !state.speculative { return .token(state.token) }
                if let claiming = state.claiming { return .wait(claiming) }
                let claiming = Task { await self.claimNow() }
                state.claiming = claiming
                return .wait(claiming)
            }
            switch next {
            case .token(let token): return token
            case .wait(let task): await task.value
            }
        }
    }

    private func claimNow() async {
        let outcome = await claim?() ?? .success(.stale)
        state.withLock { state in
            state.claiming = nil
            if case .success(.run(let claimed)) = outcome {
                state.token = claimed.token
                state.speculative = false
                state.limits = claimed.limits
            } else {
                state.refused = outcome
            }
        }
    }
}
