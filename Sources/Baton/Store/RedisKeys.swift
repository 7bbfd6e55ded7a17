/// The Redis key layout (DESIGN.md §4). Every key of one task carries the hash tag `{<root id>}`; global
/// sets are sharded into ``bucketCount`` tagged buckets.
public struct RedisKeys: Sendable, Hashable {
    public let prefix: String
    public let bucketCount: Int
    /// Each bucket's keys, built once: a commit names five of them, and interpolating them anew cost a string each.
    private let buckets: [BucketKeys]

    struct BucketKeys: Sendable {
        var indexPrefix: String
        var outboxIndex: String
        var timers: String
        var eventsPending: String
        var webhooksDue: String

        init(prefix: String, bucket: Int) {
            indexPrefix = "\(prefix)index:{\(bucket)}:"
            outboxIndex = "\(prefix)outbox:{\(bucket)}"
            timers = "\(prefix)timers:{\(bucket)}"
            eventsPending = "\(prefix)events_pending:{\(bucket)}"
            webhooksDue = "\(prefix)webhooks:{\(bucket)}"
        }
    }

    public init(prefix: String = "baton:", bucketCount: Int = 16) {
        self.prefix = prefix
        self.bucketCount = max(1, bucketCount)
        // Up to 4,096 buckets (configuration allows 1,024); a bucket past the table is named on the fly.
        buckets = (0..<min(max(1, bucketCount), 4096)).map { BucketKeys(prefix: prefix, bucket: $0) }
    }

    /// The keys of `bucket`, from the table when it holds them.
    func bucketKeys(_ bucket: Int) -> BucketKeys {
        buckets.indices.contains(bucket) ? buckets[bucket] : BucketKeys(prefix: prefix, bucket: bucket)
    }

    public static func == (lhs: RedisKeys, rhs: RedisKeys) -> Bool { lhs.prefix == rhs.prefix && lhs.bucketCount == rhs.bucketCount }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(prefix)
        hasher.combine(bucketCount)
    }

    /// The root of a task id: children are `<root>/<path>`.
    public static func root(of id: String) -> String {
        guard let slash = id.utf8.firstIndex(of: UInt8(ascii: "/")) else { return id }
        return String(id[..<slash])
    }

    /// `<prefix>{<root>}<rest>`: byte-wise (this runs several times per step).
    func base(_ id: String) -> String {
        // One string grown in place (a chain of `+` made a string per step).
        var out = ""
        out.reserveCapacity(prefix.utf8.count + id.utf8.count + 2)
        let root = id.utf8.firstIndex(of: UInt8(ascii: "/")) ?? id.endIndex
        out += prefix
        out += "{"
        out += id[..<root]
        out += "}"
        out += id[root...]
        return out
    }

    /// The keys of one task, from one computation of its `<prefix>{<root>}…` base (the hot path needs several).
    public struct TaskKeys: Sendable {
        let base: String
        /// What follows the base in each key (the commit appends base and suffix without joining them first).
        enum Suffix {
            static let task = ":task"
            static let budget = ":budget"
            static let events = ":events"
            static let outbox = ":outbox"
            static let effects = ":effects"
            static let chargedEffects = ":effects_charged"
            static let signals = ":signals"
            static let signalsSeen = ":signals_seen"
            static let checkpointPrefix = ":ckpt:"
            static let children = ":children"
            /// A large state set beside the commit script, under the commit's outbox id (``RedisTaskStore``).
            static func stagedCheckpoint(outboxID: String) -> String { checkpointPrefix + "staged:" + outboxID }
        }
        public var task: String { base + Suffix.task }
        public var budget: String { base + Suffix.budget }
        public var events: String { base + Suffix.events }
        public var outbox: String { base + Suffix.outbox }
        public var effects: String { base + Suffix.effects }
        /// The effects whose charges a commit already counted (so a retry that reuses them does not count them again).
        public var chargedEffects: String { base + Suffix.chargedEffects }
        /// The task's signal mailbox: signal id → signal JSON, received and not yet consumed.
        public var signals: String { base + Suffix.signals }
        /// Signal ids already received (deduplication), scored by arrival.
        public var signalsSeen: String { base + Suffix.signalsSeen }
        public var checkpointPrefix: String { base + Suffix.checkpointPrefix }
        /// The outcomes of a parent's ended children: child id → `{"status", "result", "error"}` JSON.
        public var children: String { base + Suffix.children }
    }

    public func of(_ id: String) -> TaskKeys { TaskKeys(base: base(id)) }

    public func task(_ id: String) -> String { of(id).task }
    public func budget(_ id: String) -> String { of(id).budget }
    public func events(_ id: String) -> String { of(id).events }
    public func outbox(_ id: String) -> String { of(id).outbox }
    public func effects(_ id: String) -> String { of(id).effects }
    public func chargedEffects(_ id: String) -> String { of(id).chargedEffects }
    public func signals(_ id: String) -> String { of(id).signals }
    public func signalsSeen(_ id: String) -> String { of(id).signalsSeen }
    public func checkpointPrefix(_ id: String) -> String { of(id).checkpointPrefix }
    public func checkpoint(_ id: String, seq: Int64) -> String { checkpointPrefix(id) + String(seq) }

    /// The bucket of a task id (FNV-1a of its root's bytes: a child `<root>/<n>` shares its root's bucket, so
    /// the script that creates or stops children reaches their index and timer keys).
    public func bucket(of id: String) -> Int {
        var hash: UInt32 = 2_166_136_261
        for byte in id.utf8 {
            if byte == UInt8(ascii: "/") { break }
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return Int(hash % UInt32(bucketCount))
    }

    public func indexPrefix(bucket: Int) -> String { bucketKeys(bucket).indexPrefix }
    public func index(bucket: Int, status: String) -> String { indexPrefix(bucket: bucket) + status }
    public func outboxIndex(bucket: Int) -> String { bucketKeys(bucket).outboxIndex }
    public func timers(bucket: Int) -> String { bucketKeys(bucket).timers }
    /// Tasks with events in their stream not yet published to `baton.events` (the event relay's work), scored by
    /// when they are due (a claim re-scores them a lease ahead). The scripts find it as their last key.
    public func eventsPending(bucket: Int) -> String { bucketKeys(bucket).eventsPending }
    /// Tasks whose webhook has events to deliver, scored by the next attempt's time.
    public func webhooksDue(bucket: Int) -> String { bucketKeys(bucket).webhooksDue }
    /// Dead-lettered tasks whose dead letter an operator discarded, scored by the discard: retention deletes them
    /// `limits.retention` later (their status index cannot say when the discard was).
    public func discarded(bucket: Int) -> String { "\(prefix)discarded:{\(bucket)}" }
    /// How far ahead of now a bucket's timers were looked at for `waking_soon` events (ms since the epoch).
    public func prewarm(bucket: Int) -> String { "\(prefix)prewarm:{\(bucket)}" }
    public func dead(bucket: Int) -> String { "\(prefix)dead:{\(bucket)}" }
    public func deadItem(bucket: Int, id: String) -> String { "\(prefix)dead:{\(bucket)}:item:\(id)" }
    /// The fingerprint groups of a dead-letter bucket: a set of fingerprints, and per fingerprint a hash with
    /// count, first_seen, last_seen (ms), sample, agent, step, bucket of the letters of that bucket.
    public func deadGroups(bucket: Int) -> String { "\(prefix)dead:{\(bucket)}:groups" }
    public func deadGroupPrefix(bucket: Int) -> String { "\(prefix)dead:{\(bucket)}:group:" }
    public func deadGroup(bucket: Int, fingerprint: String) -> String { deadGroupPrefix(bucket: bucket) + fingerprint }
    public var workers: String { "\(prefix)workers" }
    public func worker(_ id: String) -> String { "\(prefix)worker:\(id)" }
    public var audit: String { "\(prefix)audit" }
    /// The ids of the root tasks submitted with the label `run=<id>` (a set; `baton verify --run`). Children are
    /// found from their parents.
    public func run(_ id: String) -> String { "\(prefix)run:{\(id)}" }
}
