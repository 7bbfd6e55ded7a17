import ArgumentParser
import Baton
import Foundation

/// `baton stats [--since 1h]`: counts by status, pending reviews, time in each state, retries by failure bucket
/// and the share that resolved, the share of waits resumed, stalled tasks recovered, escalations decided and redrives.
struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Fleet statistics: counts, pending reviews, time in state, retries, waits, stalled tasks, escalations, redrives.",
        discussion: """
            Counts are exact (the status indexes). The rest comes from the histories of the tasks updated within \
            --since, most recent first, at most --sample of them (sampled_tasks and truncated in the JSON say how many).
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("The window: tasks updated within this long (e.g. 30m, 1h, 7d).", valueName: "duration"))
    var since: String = "1h"

    @Option(help: "At most this many task histories are read (1…100000).")
    var sample: Int = 2000

    func validate() throws {
        guard DurationText.parse(since) != nil else { throw ValidationError("--since must be a duration such as 30m, 1h or 7d") }
        guard (1...100_000).contains(sample) else { throw ValidationError("--sample must be from 1 to 100000") }
    }

    func run() async throws {
        let printer = global.output.printer
        let window = DurationText.parse(since) ?? .seconds(3600)
        try await withClient(global.connection) { client in
            let stats = try await client.queries.stats(since: window, sample: sample)
            try printer.one(stats, id: stats.generatedAt) { Self.render(stats, printer: printer) }
        }
    }

    static func share(_ value: Double?) -> String { value.map { "\(Int(($0 * 100).rounded()))%" } ?? "-" }

    static func render(_ stats: FleetStats, printer: Printer) -> String {
        var lines: [String] = []
        let order = [
            "queued", "retrying", "waiting", "sleeping", "paused", "needs_review", "succeeded", "failed", "cancelled", "budget_exceeded",
            "dead_lettered",
        ]
        let counts = order.compactMap { status in stats.counts[status].flatMap { $0 > 0 ? "\(printer.status(status)) \($0)" : nil } }
        lines.append("tasks          " + (counts.isEmpty ? "none" : counts.joined(separator: ", ")) + "  (running now: \(stats.running))")
        lines.append("pending review \(stats.pendingReviews.needsReview) needs_review, \(stats.pendingReviews.approvals) awaiting approval")
        lines.append("sample         \(stats.sampledTasks) tasks updated since \(stats.since)\(stats.truncated ? " (truncated)" : "")")
        if !stats.timeInState.isEmpty {
            let rows: [[TextFormat.Cell]] = stats.timeInState.keys.sorted().compactMap { state in
                guard let p = stats.timeInState[state] else { return nil }
                return [
                    TextFormat.Cell(state), TextFormat.Cell(String(p.samples)), TextFormat.Cell(String(format: "%.3f", p.p50)),
                    TextFormat.Cell(String(format: "%.3f", p.p95)),
                ]
            }
            lines.append("")
            lines.append(TextFormat.table(["STATE", "SAMPLES", "P50_S", "P95_S"], rows, printer: printer))
        }
        lines.append("")
        lines.append("retries        \(stats.retries.total), resolved \(stats.retries.resolved) (\(share(stats.retries.shareResolved)))")
        for bucket in stats.retries.byBucket.keys.sorted() {
            guard let entry = stats.retries.byBucket[bucket] else { continue }
            lines.append("  \(bucket): \(entry.retries), resolved \(entry.resolved) (\(share(entry.shareResolved)))")
        }
        let triggers = stats.waits.byTrigger.keys.sorted().map { "\($0) \(stats.waits.byTrigger[$0] ?? 0)" }.joined(separator: ", ")
        lines.append(
            "waits          \(stats.waits.total), resumed \(stats.waits.resumed) (\(share(stats.waits.shareResumed)))"
                + (triggers.isEmpty ? "" : ": \(triggers)") + ", still open \(stats.waits.open)")
        lines.append("stalled        \(stats.stalled.republished) republished, \(stats.stalled.recovered) recovered")
        let recovery = stats.recovery
        let decided =
            recovery.timeToDecision.map { ", after p50 \(TextFormat.duration($0.p50)) / p95 \(TextFormat.duration($0.p95))" } ?? ""
        let oldest = recovery.oldestPendingSeconds.map { ", the oldest for \(TextFormat.duration($0))" } ?? ""
        lines.append(
            "escalated      \(recovery.escalated) (dead letters, reviews), decided \(recovery.decided)\(decided); waiting for a person now \(recovery.pending)\(oldest)"
        )
        lines.append(
            "redriven       \(recovery.redriven), succeeded \(recovery.redrivenSucceeded) (\(share(recovery.shareRedrivenSucceeded)))")
        return lines.joined(separator: "\n")
    }
}
