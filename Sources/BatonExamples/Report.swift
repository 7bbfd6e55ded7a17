import Baton

/// `report`: "analyse N documents and write a report" — the demo agent. One document per step, each through
/// a **scripted model stand-in** (``ScriptedModel``: no real LLM is called; it returns canned analyses and
/// charges realistic token counts and prices), as a keyed side effect, with progress after each document.
///
/// The human checkpoint: after the analysis, step `outline` drafts the report's outline and waits for a human's
/// `approve` or `reject` (`baton approve TASK`, `baton reject TASK --reason R`) for at most `approval_timeout_s`
/// (default one day). Approved → `write` (an approval's `comment` goes into the report); rejected → the task fails
/// with bucket `rejected` naming who and why; no answer in time → it fails with bucket `approval_timeout`.
/// Input `"approval": false` skips the checkpoint (analysis straight to writing).
public struct ReportAgent: Agent {
    public struct Input: Codable, Sendable {
        public var documents: Int = 20
        public var topic: String = "quarterly incidents"
        /// Milliseconds the scripted model "thinks" per document (to make the demo watchable).
        public var thinkMilliseconds: Int = 150
        /// Whether the outline waits for a human's approval (default true).
        public var approval: Bool = true
        /// How long the outline waits for `approve` or `reject` (default 86,400 s).
        public var approvalTimeoutSeconds: Double = 86_400
        enum CodingKeys: String, CodingKey {
            case documents, topic, approval
            case thinkMilliseconds = "think_ms"
            case approvalTimeoutSeconds = "approval_timeout_s"
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            documents = try c.decodeIfPresent(Int.self, forKey: .documents) ?? 20
            topic = try c.decodeIfPresent(String.self, forKey: .topic) ?? "quarterly incidents"
            thinkMilliseconds = try c.decodeIfPresent(Int.self, forKey: .thinkMilliseconds) ?? 150
            approval = try c.decodeIfPresent(Bool.self, forKey: .approval) ?? true
            approvalTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .approvalTimeoutSeconds) ?? 86_400
            guard approvalTimeoutSeconds > 0, approvalTimeoutSeconds <= SleeperAgent.maxSeconds else {
                throw DecodingError.dataCorruptedError(
                    forKey: .approvalTimeoutSeconds, in: c,
                    debugDescription: "must be a number of seconds > 0 and at most \(Int(SleeperAgent.maxSeconds)) (ten years)")
            }
            guard (0...60_000).contains(thinkMilliseconds) else {
                throw DecodingError.dataCorruptedError(
                    forKey: .thinkMilliseconds, in: c, debugDescription: "must be between 0 and 60000 (the scripted model's think time)")
            }
            guard (1...10_000).contains(documents) else {
                throw DecodingError.dataCorruptedError(forKey: .documents, in: c, debugDescription: "must be between 1 and 10000")
            }
        }
    }

    public struct State: Codable, Sendable {
        public var findings: [String] = []
        /// The outline a human approves (drafted by step `outline`).
        public var outline: String?
        /// Who approved the outline, and their comment.
        public var approvedBy: String?
        public var comment: String?
        public var report: String?
    }

    public static let name = "report"
    public static let steps = ["analyse", "outline", "write", "expired"]

    public init() {}

    public func initialState(for input: Input) throws -> State { State() }

    public func run(step: String, context: StepContext<ReportAgent>) async throws -> StepOutcome {
        let input = context.input
        switch step {
        case "analyse":
            let index = context.state.findings.count + 1
            let finding = try await context.sideEffect("doc-\(index)") {
                let answer = try await ScriptedModel.complete(
                    prompt: "Analyse document \(index) about \(input.topic)", thinkMilliseconds: input.thinkMilliseconds)
                try await context.charge(costUSD: answer.costUSD, tokens: answer.tokens)
                return answer.text
            }
            context.state.findings.append(finding)
            await context.progress(Double(index) / Double(input.documents), "\(index)/\(input.documents) documents")
            guard index >= input.documents else { return .next("analyse") }
            return input.approval ? .next("outline") : .next("write")
        case "outline":
            let themes = Dictionary(grouping: context.state.findings) { finding in
                finding.components(separatedBy: "points to ").last ?? finding
            }
            let sections = themes.keys.sorted().map { "\($0) (\(themes[$0]?.count ?? 0) documents)" }
            context.state.outline = "Outline of the report on \(input.topic): " + sections.joined(separator: "; ")
            await context.progress(1, "outline ready: waiting for approve or reject")
            return .wait(
                for: [.signal("approve"), .signal("reject"), .timeout(.milliseconds(Int64(input.approvalTimeoutSeconds * 1000)))],
                then: "write", onTimeout: "expired")
        case "expired":
            return .fail(
                .permanent(
                    "nobody approved or rejected the outline within \(Int(input.approvalTimeoutSeconds)) s", bucket: "approval_timeout"))
        default:
            if input.approval, let wakeup = context.wakeup, case .signal(let name, let payload, _) = wakeup.trigger {
                if name == "reject" {
                    let who = wakeup.actor ?? "someone"
                    return .fail(.permanent("\(who) rejected the outline: \(wakeup.reason ?? "no reason given")", bucket: "rejected"))
                }
                context.state.approvedBy = wakeup.actor
                context.state.comment = payload["comment"]?.stringValue ?? wakeup.reason
            }
            let answer = try await ScriptedModel.complete(
                prompt: "Write a report on \(input.topic) from \(context.state.findings.count) findings",
                thinkMilliseconds: input.thinkMilliseconds)
            try await context.charge(costUSD: answer.costUSD, tokens: answer.tokens)
            var report = "Report on \(input.topic): \(context.state.findings.count) documents analysed. \(answer.text)"
            if let approvedBy = context.state.approvedBy { report += " Outline approved by \(approvedBy)." }
            if let comment = context.state.comment, !comment.isEmpty { report += " Reviewer's note: \(comment)" }
            context.state.report = report
            return .complete(["report": .string(context.state.report ?? ""), "documents": .int(Int64(context.state.findings.count))])
        }
    }
}

/// A stand-in for a language model, clearly not one: deterministic canned text, token counts derived from
/// the prompt, and a price of $3 per million input and $15 per million output tokens.
public enum ScriptedModel {
    public struct Answer: Sendable {
        public var text: String
        public var tokens: Int64
        public var costUSD: Double
    }

    public static func complete(prompt: String, thinkMilliseconds: Int) async throws -> Answer {
        if thinkMilliseconds > 0 { try await Task.sleep(for: .milliseconds(thinkMilliseconds)) }
        var hash: UInt64 = 1_469_598_103_934_665_603
        for byte in prompt.utf8 { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
        let inputTokens = Int64(800 + hash % 1200)
        let outputTokens = Int64(150 + (hash >> 16) % 250)
        let themes = [
            "a recurring timeout in the billing export", "an expired certificate", "a retry storm after a deploy",
            "a full disk on a replica",
        ]
        let text = "[scripted] \(prompt): points to \(themes[Int(hash % UInt64(themes.count))])."
        return Answer(
            text: text, tokens: inputTokens + outputTokens, costUSD: Double(inputTokens) * 3e-6 + Double(outputTokens) * 15e-6)
    }
}

extension AgentRegistry {
    /// The example agents: `stepchain`, `flaky`, `spender`, `report`, `sleeper`, `approval`, `fanout`.
    public static var examples: AgentRegistry {
        var registry = AgentRegistry()
        registry.register(StepChainAgent())
        registry.register(FlakyAgent())
        registry.register(SpenderAgent())
        registry.register(ReportAgent())
        registry.register(SleeperAgent())
        registry.register(ApprovalAgent())
        registry.register(FanoutAgent())
        return registry
    }
}
