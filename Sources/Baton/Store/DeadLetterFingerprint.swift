import Foundation

/// The fingerprint of a dead letter: what makes two failures "the same problem", so an operator sees one group
/// of 400 instead of 400 rows.
///
/// It is a hash of the agent, the step, the failure bucket (the reason when there is no bucket, e.g. for a
/// malformed message) and the error message normalised: the task id, UUIDs, quoted strings, hex ids and
/// numbers are replaced by placeholders, and runs of white space collapsed. Computed once, when the dead letter
/// is taken in, and stored on it.
public enum DeadLetterFingerprint {
    /// The normalised message: `task 01J… failed after 3 attempts: HTTP 503 from "api.example.com"` becomes
    /// `task <task> failed after <n> attempts: HTTP <n> from <str>`.
    public static func normalise(_ message: String, taskID: String? = nil) -> String {
        var text = message
        if let taskID, !taskID.isEmpty {
            text = text.replacing(taskID, with: "<task>")
            let root = RedisKeys.root(of: taskID)
            if root != taskID { text = text.replacing(root, with: "<task>") }
        }
        text = text.replacing(#/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/#, with: "<uuid>")
        text = text.replacing(#/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/#, with: "<str>")
        text = text.replacing(#/\b0[xX][0-9a-fA-F]+\b/#, with: "<hex>")
        // A hex id: 8 or more hex characters with at least one digit (a plain word such as "deadbeefed" stays).
        text = text.replacing(#/\b(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{8,}\b/#, with: "<hex>")
        text = text.replacing(#/\d+/#, with: "<n>")
        text = text.replacing(#/\s+/#, with: " ")
        return text.trimmingCharacters(in: .whitespaces)
    }

    /// The fingerprint: 16 hex digits of FNV-1a over agent, step, bucket and the normalised message.
    public static func compute(agent: String?, step: String?, bucket: String?, reason: String, message: String, taskID: String?)
        -> String
    {
        let kind = bucket.flatMap { $0.isEmpty ? nil : $0 } ?? reason
        let parts = [agent ?? "", step ?? "", kind, normalise(message, taskID: taskID)]
        var hash: UInt64 = 14_695_981_039_346_656_037
        for byte in parts.joined(separator: "\u{1F}").utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 1_099_511_628_211
        }
        return TaskID.hex(hash, width: 16)
    }
}
