import CoreMetrics
import Synchronization

/// The per-process metrics of DESIGN.md §7 (counters, histograms, the in-flight gauge), through swift-metrics:
/// names and label names live here only. Until a process bootstraps a `MetricsSystem` (``baton worker --http``,
/// `baton serve`) they go to swift-metrics' no-op handler.
///
/// Hot path: a metric with labels is created once per label set and cached (``Family``); an update is a dictionary
/// lookup under a lock plus the handler's atomic add. Label values are agent, step, queue, bucket, reason and
/// outcome names — never a task id — so the caches stay as small as the fleet's vocabulary.
public enum BatonMetrics {
    /// Metric names, in one place (CONVENTIONS.md §4).
    public enum Name {
        public static let stepsTotal = "baton_steps_total"
        public static let stepDuration = "baton_step_duration_seconds"
        public static let stepQueueWait = "baton_step_queue_wait_seconds"
        public static let stepFailures = "baton_step_failures_total"
        public static let stepRetries = "baton_step_retries_total"
        public static let retriesResolved = "baton_retries_resolved_total"
        public static let handoffs = "baton_handoffs_total"
        public static let cost = "baton_cost_microdollars_total"
        public static let tokens = "baton_tokens_total"
        public static let budgetExceeded = "baton_budget_exceeded_total"
        public static let deadLettered = "baton_dead_lettered_total"
        public static let tasksSubmitted = "baton_tasks_submitted_total"
        public static let tasksFinished = "baton_tasks_finished_total"
        public static let taskDuration = "baton_task_duration_seconds"
        public static let resumed = "baton_resumed_total"
        public static let stepsInFlight = "baton_worker_steps_in_flight"
        public static let duplicateDeliveries = "baton_duplicate_deliveries_total"
        public static let stalledRepublished = "baton_stalled_republished_total"
        public static let leaseLost = "baton_lease_lost_total"
        public static let timerLag = "baton_timer_lag_seconds"
        public static let webhookDeliveries = "baton_webhook_deliveries_total"
        public static let redrives = "baton_redrives_total"
        public static let tasksPurged = "baton_tasks_purged_total"
    }

    /// Histogram buckets (seconds) by metric name, for the Prometheus factory.
    public static let buckets: [String: [Double]] = [
        Name.stepDuration: stepBuckets, Name.stepQueueWait: stepBuckets, Name.timerLag: stepBuckets,
        Name.taskDuration: [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 172_800, 345_600, 604_800],
    ]
    /// 5 ms … 30 min: steps last from milliseconds (a tool call) to minutes (a model call).
    public static let stepBuckets: [Double] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
    ]

    static let steps = Family(Name.stepsTotal, ["agent", "step", "outcome"], counter)
    static let stepDuration = Family(Name.stepDuration, ["agent", "step"], histogram)
    static let queueWait = Family(Name.stepQueueWait, ["queue"], histogram)
    static let failures = Family(Name.stepFailures, ["agent", "step", "bucket"], counter)
    static let retries = Family(Name.stepRetries, ["agent", "step", "bucket"], counter)
    static let retriesResolved = Family(Name.retriesResolved, ["agent", "bucket"], counter)
    static let handoffs = Family(Name.handoffs, ["agent"], counter)
    static let cost = Family(Name.cost, ["agent"], counter)
    static let tokens = Family(Name.tokens, ["agent", "direction"], counter)
    static let budgetExceeded = Family(Name.budgetExceeded, ["agent", "kind"], counter)
    static let deadLettered = Family(Name.deadLettered, ["agent", "reason"], counter)
    static let tasksSubmitted = Family(Name.tasksSubmitted, ["agent"], counter)
    static let tasksFinished = Family(Name.tasksFinished, ["agent", "status"], counter)
    static let taskDuration = Family(Name.taskDuration, ["agent", "status"], histogram)
    static let resumed = Family(Name.resumed, ["agent", "trigger"], counter)
    static let stepsInFlight = Family(Name.stepsInFlight, ["worker"]) { Gauge(label: $0, dimensions: $1) }
    static let duplicateDeliveries = Family(Name.duplicateDeliveries, ["queue"], counter)
    static let stalledRepublished = Family(Name.stalledRepublished, ["agent"], counter)
    static let leaseLost = Family(Name.leaseLost, ["agent"], counter)
    static let timerLag = Family(Name.timerLag, [], histogram)
    static let webhookDeliveries = Family(Name.webhookDeliveries, ["result"], counter)
    static let redrives = Family(Name.redrives, ["agent"], counter)
    /// Finished tasks the retention sweep deleted.
    static let purged = Family(Name.tasksPurged, [], counter)

    @Sendable static func counter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
        Counter(label: label, dimensions: dimensions)
    }

    @Sendable static func histogram(_ label: String, _ dimensions: [(String, String)]) -> Recorder {
        Recorder(label: label, dimensions: dimensions, aggregate: true)
    }

    /// One metric family: its name, fixed label names, and the metric of each label set seen (created once).
    final class Family<Metric: AnyObject>: Sendable {
        let name: String
        let labelNames: [String]
        let make: @Sendable (String, [(String, String)]) -> Metric
        private let cache = Mutex<[[String]: Metric]>([:])

        init(_ name: String, _ labelNames: [String], _ make: @escaping @Sendable (String, [(String, String)]) -> Metric) {
            self.name = name
            self.labelNames = labelNames
            self.make = make
        }

        /// The metric of these label values (in the order of ``labelNames``).
        func callAsFunction(_ values: String...) -> Metric {
            cache.withLock { cache in
                if let metric = cache[values] { return metric }
                let metric = make(name, Array(zip(labelNames, values)))
                cache[values] = metric
                return metric
            }
        }
    }

    // MARK: - Updates (each one line at its call site)

    static func seconds(milliseconds: Int64) -> Double { Double(max(0, milliseconds)) / 1000 }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// What a step did, for `baton_steps_total{outcome}`: the commit's kind, or `fenced` / `lease_lost`.
    static func outcome(_ kind: Commit.Kind) -> String {
        switch kind {
        case .next: "next"
        case .handoff: "handoff"
        case .complete: "complete"
        case .fail: "fail"
        case .budget: "budget_exceeded"
        case .retry: "retry"
        case .dead: "dead"
        case .wait(let spec): spec.kind == "sleep" ? "sleep" : "wait"
        case .parallel: "parallel"
        }
    }

    /// `"signal"` from `{"trigger":"signal",…}` (the wake-up of a resumed step), or nil.
    static func trigger(wakeupJSON: String) -> String? {
        guard !wakeupJSON.isEmpty, let value = try? JSONValue.parse(Array(wakeupJSON.utf8)) else { return nil }
        return value["trigger"]?.stringValue
    }

    /// Creates the label-free series and those labelled only by the agents and queues this process serves, at
    /// zero: a family is then present on `/metrics` before its first event, and `rate()` starts from 0.
    public static func prime(agents: [String], queues: [String], worker: String) {
        for agent in agents {
            for family in [handoffs, cost, tasksSubmitted, stalledRepublished, leaseLost, redrives] { _ = family(agent) }
            _ = tokens(agent, "total")
        }
        for queue in queues { _ = duplicateDeliveries(queue) }
        for result in ["delivered", "failed", "gone", "gave_up"] { _ = webhookDeliveries(result) }
        _ = timerLag()
        _ = purged()
        stepsInFlight(worker).record(0)
    }

    /// The steps this worker runs now.
    public static func setInFlight(worker: String, _ count: Int) { stepsInFlight(worker).record(count) }

    /// A redrive of a dead letter or task (`baton dead redrive`, `POST …/redrive`): counted where it is made.
    public static func redriven(agent: String) { redrives(agent).increment() }

    /// A webhook delivery attempt's result: `delivered`, `failed` (will retry), `gone` (410) or `gave_up` (schedule exhausted).
    public static func webhook(_ result: String) { webhookDeliveries(result).increment() }
}
