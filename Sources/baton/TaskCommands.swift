import ArgumentParser
import Baton
import Foundation
import Logging

/// Loads the configuration, connects a ``BatonClient`` for a command, and closes it afterwards. A bad
/// configuration or an unreachable server is printed and becomes exit code 2.
func withClient<T>(_ connection: ConnectionOptions, publishing: Bool = false, _ body: (BatonClient) async throws -> T) async throws -> T {
    let configuration = try await connection.load()
    let client: BatonClient
    do {
        client = try await BatonClient.connect(
            amqpURL: configuration.amqpURL, redisURL: configuration.redisURL, publishing: publishing, settings: configuration.store,
            logger: Logger(label: "baton.cli"))
    } catch {
        Terminal.error("\(error)")
        throw ExitCode(CLIExit.configuration)
    }
    do {
        let result = try await body(client)
        await client.close()
        return result
    } catch {
        await client.close()
        throw error
    }
}

/// Who an operator action is recorded as: `$BATON_ACTOR`, else `cli:$USER@host`.
enum CLIActor {
    static func current(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let actor = environment["BATON_ACTOR"], !actor.isEmpty { return actor }
        let user = environment["USER"].flatMap { $0.isEmpty ? nil : $0 } ?? environment["LOGNAME"] ?? "unknown"
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
        return "cli:\(user)@\(host)"
    }
}

/// Prints a value as JSON on stdout.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// `baton submit AGENT`.
struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit", abstract: "Submit a task (published to baton.submit like any service would).")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The agent, e.g. stepchain, report, flaky, spender.") var agent: String
    @Option(help: "The input: JSON, @file, or - for stdin.") var input: String = "{}"
    @Option(help: "A client-chosen task id (resubmitting it is a no-op).") var id: String?
    @Option(help: "A tenant name.") var tenant: String?
    @Option(
        help: "Budget limits: max_cost_usd=5,max_steps=200,max_tokens=…,max_tool_calls=…,max_handoffs=…,max_attempts=…,on_limit=stop|review"
    )
    var budget: String?
    @Option(help: "A webhook URL for events.") var notify: String?
    @Option(help: ArgumentHelp("A label (repeatable); run=<ID> makes the task part of a `baton verify` run.", valueName: "key=value"))
    var label: [String] = []
    @Flag(help: "Wait until the task ends; exit 3 unless it succeeded.") var wait = false

    func readInput() throws -> JSONValue {
        var text = input
        if text == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else if text.hasPrefix("@") {
            guard let data = FileManager.default.contents(atPath: String(text.dropFirst())) else {
                throw ValidationError("cannot read the input file \(text.dropFirst())")
            }
            text = String(decoding: data, as: UTF8.self)
        }
        do { return try JSONValue.parse(Array(text.utf8)) } catch { throw ValidationError("--input is not valid JSON: \(error)") }
    }

    static func labels(_ pairs: [String]) throws -> [String: String]? {
        guard !pairs.isEmpty else { return nil }
        var labels: [String: String] = [:]
        for pair in pairs {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--label looks like key=value (got '\(pair)')") }
            labels[parts[0]] = parts[1]
        }
        return labels
    }

    static func parseBudget(_ text: String) throws -> BudgetRequest {
        var budget = BudgetRequest()
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { throw ValidationError("--budget entries look like max_steps=200 (got '\(pair)')") }
            func int() throws -> Int64 {
                guard let value = Int64(parts[1]), value >= 0 else {
                    throw ValidationError("--budget \(parts[0]) must be a whole number ≥ 0")
                }
                return value
            }
            switch parts[0] {
            case "max_cost_usd":
                guard let value = Double(parts[1]), value >= 0 else { throw ValidationError("--budget max_cost_usd must be a number ≥ 0") }
                budget.maxCostUSD = value
            case "max_tokens": budget.maxTokens = try int()
            case "max_steps": budget.maxSteps = try int()
            case "max_tool_calls": budget.maxToolCalls = try int()
            case "max_handoffs": budget.maxHandoffs = try int()
            case "max_attempts": budget.maxAttempts = try int()
            case "deadline":
                guard let date = ISO8601DateFormatter().date(from: parts[1]) else {
                    throw ValidationError("--budget deadline must be ISO-8601")
                }
                budget.deadline = date
            case "on_limit":
                guard let value = OnLimit(parts[1]) else {
                    throw ValidationError("--budget on_limit must be stop or review (got '\(parts[1])')")
                }
                budget.onLimit = value
            default: throw ValidationError("unknown --budget key '\(parts[0])'")
            }
        }
        return budget
    }

    func run() async throws {
        let request = SubmitRequest(
            id: id, agent: agent, input: try readInput(), budget: try budget.map(Self.parseBudget), tenant: tenant,
            labels: try Self.labels(label),
            notify: notify.map { .init(webhook: $0, events: nil) })
        do { try request.validate() } catch { throw ValidationError(error.message) }
        let printer = global.output.printer
        try await withClient(global.connection, publishing: true) { client in
            let reply = try await client.submit(request)
            if let error = reply.error {
                Terminal.error("the worker refused the submit (\(error.code)): \(error.message)")
                throw ExitCode(CLIExit.failed)
            }
            if let warning = reply.warning { Terminal.note("warning: \(warning)") }
            if reply.status == nil {
                Terminal.note("submitted \(reply.taskID); no worker answered yet (is `baton worker` running for agent '\(agent)'?)")
            }
            if wait {
                let view = try await StatusCommand.waitUntilDone(client, id: reply.taskID)
                try printer.one(view, id: view.id) { StatusCommand.render(view, printer: printer) }
                if view.status != "succeeded" { throw ExitCode(CLIExit.notSucceeded) }
                return
            }
            let answer = ["task_id": reply.taskID, "status": reply.status ?? "submitted"]
            try printer.one(answer, id: reply.taskID) { reply.taskID }
        }
    }
}

/// `baton status TASK`.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a task: status and reason, step, budget, lease, last error.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The task id.") var task: String

    func run() async throws {
        let printer = global.output.printer
        try await withClient(global.connection) { client in
            guard let view = try await client.queries.task(task) else {
                Terminal.error(CLIExit.noTask(task))
                throw ExitCode(CLIExit.notFound)
            }
            let tenantUsage = try await view.tenant.asyncMap { try await client.tenantUsage($0) } ?? nil
            try printer.one(view, id: view.id) { Self.render(view, printer: printer, tenantUsage: tenantUsage) }
        }
    }

    static func waitUntilDone(_ client: BatonClient, id: String) async throws -> TaskView {
        while true {
            if let view = try await client.queries.task(id), view.isTerminal { return view }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The text view of a task: status and reason, position, progress, budget, lease, timer, error, result.
    static func render(_ v: TaskView, printer: Printer, now: Date = Date(), tenantUsage: BatonClient.TenantUsage? = nil) -> String {
        var lines = ["\(v.id)  \(v.agent)  \(printer.status(v.status))" + (v.statusReason.map { " (\($0))" } ?? "")]
        lines.append("  step      \(v.step ?? "-")  seq \(v.seq)  attempt \(v.attempt)  branch \(v.branch)")
        if let p = v.progress { lines.append("  progress  \(Int((p.fraction * 100).rounded()))%  \(p.message)") }
        let u = v.budget.used
        let l = v.budget.limits
        func of<T>(_ limit: T?) -> String { limit.map { " / \($0)" } ?? "" }
        lines.append(
            "  budget    \(TextFormat.cost(u.costUSD))\(l.maxCostUSD.map { " / " + TextFormat.cost($0) } ?? "")"
                + "  tokens \(u.tokens)\(of(l.maxTokens))  steps \(u.steps)\(of(l.maxSteps))"
                + "  tool calls \(u.toolCalls)\(of(l.maxToolCalls))  handoffs \(u.handoffs)\(of(l.maxHandoffs))")
        if let tenant = v.tenant { lines.append("  tenant    \(tenant)") }
        if let parent = v.parentID { lines.append("  parent    \(parent)") }
        if let children = v.children { lines.append("  children  \(children.done)/\(children.total) ended") }
        if let lease = v.lease {
            lines.append("  lease     \(lease.owner), expires \(TextFormat.ago(lease.expiresAt, now: now))")
        }
        if let t = tenantUsage {
            lines.append(
                "  today     tenant \(t.tenant): \(TextFormat.cost(Double(t.costMicros) / 1_000_000))"
                    + (t.limits.maxCostMicrosPerDay.map { " / " + TextFormat.cost(Double($0) / 1_000_000) } ?? "")
                    + "  tokens \(t.tokens)" + (t.limits.maxTokensPerDay.map { " / \($0)" } ?? "") + " (UTC day)")
        }
        if let next = v.nextTimerAt {
            let label = v.status == "retrying" ? "next try " : "wakes    "
            lines.append("  \(label) \(TextFormat.ago(next, now: now)) (\(next))")
        }
        if let waits = v.waitingFor, !waits.isEmpty {
            let names = waits.map { (w: JSONValue) -> String in
                if let children = w["children"]?.intValue { return "\(children) children" }
                return w["signal"]?.stringValue.map { "signal \($0)" } ?? w["timeout_at"]?.stringValue.map { "timeout \($0)" }
                    ?? w["at"]?.stringValue.map { "time \($0)" } ?? w.jsonString
            }
            lines.append("  waits for \(names.joined(separator: ", "))")
        }
        if let pending = v.signalsPending, !pending.isEmpty {
            lines.append("  signals   \(pending.count) pending: \(pending.map(\.name).joined(separator: ", "))")
        }
        if let error = v.error {
            let bucket = error["bucket"]?.stringValue.map { "[\($0)] " } ?? ""
            lines.append("  error     " + printer.paint(bucket + (error["message"]?.stringValue ?? error.jsonString), "31"))
        }
        if let result = v.result { lines.append("  result    \(TextFormat.clip(result.jsonString, 200))") }
        if let hook = v.webhook {
            var text = "\(hook.delivered) delivered"
            if let disabled = hook.disabled {
                text += ", " + printer.paint("disabled: \(disabled)", "31")
            } else if hook.failing {
                let next = hook.nextAttemptAt.map { ", next try \(TextFormat.ago($0, now: now))" } ?? ""
                text += ", " + printer.paint("failing (\(hook.attempts) attempts): \(hook.lastError ?? "")", "31") + next
            }
            lines.append("  webhook   \(text)")
        }
        lines.append(
            "  created   \(TextFormat.ago(v.createdAt, now: now))  updated \(TextFormat.ago(v.updatedAt, now: now))"
                + (v.finishedAt.map { "  finished \(TextFormat.ago($0, now: now))" } ?? ""))
        return lines.joined(separator: "\n")
    }
}

extension Optional {
    /// `map` with an async transform.
    func asyncMap<U>(_ transform: (Wrapped) async throws -> U) async rethrows -> U? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
