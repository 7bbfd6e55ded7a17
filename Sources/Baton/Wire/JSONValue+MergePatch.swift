extension JSONValue {
    /// This value with an RFC 7396 JSON merge patch applied: an object patch merges key by key (a `null` value
    /// removes the key, an object value merges recursively); any other patch replaces the value.
    public func applyingMergePatch(_ patch: JSONValue) -> JSONValue {
        guard case .object(let changes) = patch else { return patch }
        var result = objectValue ?? [:]
        for (key, change) in changes {
            if change == .null {
                result[key] = nil
            } else {
                result[key] = (result[key] ?? .null).applyingMergePatch(change)
            }
        }
        return .object(result)
    }
}

extension JSONValue {
    /// The RFC 7396 merge patch that turns `self` into `other` (`self.applyingMergePatch(patch) == other`), except
    /// where `other` holds an explicit `null` inside an object: a merge patch cannot express that (it removes the
    /// key instead).
    public func mergePatch(to other: JSONValue) -> JSONValue {
        guard case .object(let before) = self, case .object(let after) = other else { return other }
        var patch: [String: JSONValue] = [:]
        for key in before.keys where after[key] == nil { patch[key] = .null }
        for (key, value) in after where before[key] != value {
            patch[key] = (before[key] ?? .null).mergePatch(to: value)
        }
        return .object(patch)
    }
}
