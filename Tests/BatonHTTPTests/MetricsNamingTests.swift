import Baton
import Foundation
import Testing

@testable import BatonHTTP

/// The metric vocabulary: every name is a Prometheus name with its unit or `_total`, histogram buckets are sorted,
/// and the labels derived from Redis fields map as documented (docs/operations.md). No servers needed.
@Suite("Metric names and labels")
struct MetricsNamingTests {
    static let workerNames = [
        BatonMetrics.Name.stepsTotal, BatonMetrics.Name.stepDuration, BatonMetrics.Name.stepQueueWait, BatonMetrics.Name.stepFailures,
        BatonMetrics.Name.stepRetries, BatonMetrics.Name.retriesResolved, BatonMetrics.Name.handoffs, BatonMetrics.Name.cost,
        BatonMetrics.Name.tokens, BatonMetrics.Name.budgetExceeded, BatonMetrics.Name.deadLettered, BatonMetrics.Name.tasksSubmitted,
        BatonMetrics.Name.tasksFinished, BatonMetrics.Name.taskDuration, BatonMetrics.Name.resumed, BatonMetrics.Name.stepsInFlight,
        BatonMetrics.Name.duplicateDeliveries, BatonMetrics.Name.stalledRepublished, BatonMetrics.Name.leaseLost,
        BatonMetrics.Name.timerLag, BatonMetrics.Name.webhookDeliveries, BatonMetrics.Name.redrives,
    ]

    @Test func namesFollowPrometheusConventions() {
        #expect(Set(Self.workerNames).count == Self.workerNames.count)
        for name in Self.workerNames {
            #expect(name.hasPrefix("baton_"), "\(name)")
            #expect(name.allSatisfy { $0.isLowercase || $0 == "_" }, "\(name)")
            let histogram = BatonMetrics.buckets[name] != nil
            if histogram { #expect(name.hasSuffix("_seconds"), "\(name): a histogram of durations in seconds") }
        }
        for (name, buckets) in BatonMetrics.buckets {
            #expect(buckets == buckets.sorted() && Set(buckets).count == buckets.count, "\(name) buckets")
        }
        #expect(BatonMetrics.buckets[BatonMetrics.Name.stepDuration]?.first == 0.005)
        #expect(BatonMetrics.buckets[BatonMetrics.Name.stepDuration]?.last == 1800)
        #expect(BatonMetrics.buckets[BatonMetrics.Name.taskDuration]?.first == 1)
        #expect(BatonMetrics.buckets[BatonMetrics.Name.taskDuration]?.last == 604_800)
    }

    @Test(arguments: [
        ("{\"k\":\"sleep\",\"due\":1}", "sleeping", "sleep"),
        ("{\"k\":\"children\",\"n\":3}", "waiting", "children"),
        ("{\"k\":\"wait\",\"signals\":[\"approve\"]}", "waiting", "signal"),
        ("{\"k\":\"wait\",\"signals\":[],\"due\":5}", "waiting", "timer"),
        ("", "sleeping", "sleep"),
    ])
    func waitKindFromTheWaitField(json: String, status: String, kind: String) {
        #expect(FleetMetrics.waitKind(json, status: status) == kind)
    }
}
