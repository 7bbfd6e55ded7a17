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
