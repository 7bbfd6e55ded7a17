import Configuration
import Foundation
import Synchronization
import Yams

/// Baton's configuration as a process starts with it: flags > environment (`BATON_*`) > the YAML file > defaults
/// (DESIGN.md §7).
///
/// ```swift
/// let configuration = try await BatonConfiguration.load(file: options.config, overrides: ["worker.concurrency": "8"])
/// let worker = Worker(configuration: configuration.worker, registry: registry, logger: logger)
/// ```
///
/// Every key is listed in ``ConfigKeys/all`` and, with its default and a comment, in `Config/baton.yaml`.
/// A key the YAML file has but Baton does not know, or a value of the wrong type or out of range, is a
/// ``BatonError`` (code ``BatonError/Code/configuration``) naming the key and where the value came from.
public struct BatonConfiguration: Sendable {
    /// The whole configuration, as a worker uses it; clients use its URLs and ``Worker/Configuration/store``.
    public var worker: Worker.Configuration
    /// The settings of `baton serve`.
    public var http = HTTPSettings()
    /// The YAML file that was read, if any.
    public var file: String?

    /// The RabbitMQ URL.
    public var amqpURL: String { worker.amqpURL }
    /// The Redis URL.
    public var redisURL: String { worker.redisURL }
    /// The settings of the Redis store (key prefix, caps).
    public var store: RedisTaskStore.Settings { worker.store }

    /// The default file, relative to the current directory: read when it exists and nothing else names one.
    public static let defaultFile = "Config/baton.yaml"

    /// The YAML file to read: `flag`, else `$BATON_CONFIG`, else ``defaultFile`` when it exists; nil for none.
    public static func filePath(
        flag: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
        currentDirectory: String = FileManager.default.currentDirectoryPath
    ) -> (path: String, explicit: Bool)? {
        if let flag, !flag.isEmpty { return (flag, true) }
        if let path = environment["BATON_CONFIG"], !path.isEmpty { return (path, true) }
        let candidate = (currentDirectory as NSString).appendingPathComponent(defaultFile)
        return FileManager.default.fileExists(atPath: candidate) ? (defaultFile, false) : nil
    }

    /// Loads the configuration.
    ///
    /// - Parameters:
    ///   - file: the `--config` flag (else `$BATON_CONFIG`, else `Config/baton.yaml` when it exists).
    ///   - environment: where `BATON_*` variables are read.
    ///   - overrides: values from flags, by key (`"worker.concurrency": "8"`; lists comma-separated); they win.
    ///   - workerID: the worker's id.
    /// - Throws: a ``BatonError`` with code `configuration` naming the key, the value and its source.
    public static func load(
        file: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment, overrides: [String: String] = [:],
        workerID: String = Worker.defaultID()
    ) async throws -> BatonConfiguration {
        for key in overrides.keys where !ConfigKeys.names.contains(key) {
            throw BatonError(.configuration, "unknown configuration key '\(key)' given as a flag", field: key)
        }
        var flagValues: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, value) in overrides {
            let content: ConfigContent =
                key == ConfigKeys.workerQueues
                ? .stringArray(value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) : .string(value)
            flagValues[AbsoluteConfigKey(ConfigKey(key))] = ConfigValue(content, isSecret: false)
        }
        var providers: [any ConfigProvider] = [
            InMemoryProvider(name: "flags", values: flagValues),
            EnvironmentVariablesProvider(environmentVariables: environment).prefixKeys(with: ConfigKey("baton")),
        ]
        var sources: [Source] = [.flags, .environment]
        var lines: [String: Int] = [:]
        let chosen = filePath(flag: file, environment: environment)
        if let chosen {
            let text: String
            do {
                text = try String(contentsOfFile: chosen.path, encoding: .utf8)
            } catch {
                let why =
                    FileManager.default.fileExists(atPath: chosen.path)
                    ? "cannot be read (\(error.localizedDescription))" : "does not exist"
                throw BatonError(
                    .configuration, "the configuration file \(chosen.path) \(why): fix --config or $BATON_CONFIG", field: "config")
            }
            lines = try checkKeys(yaml: text, file: chosen.path)
            if !lines.isEmpty {
                // FileProvider's documented initializer that takes its path from a reader (no FilePath import).
                let pathReader = ConfigReader(
                    provider: InMemoryProvider(values: ["filePath": ConfigValue(.string(chosen.path), isSecret: false)]))
                do {
                    providers.append(try await FileProvider<YAMLSnapshot>(config: pathReader))
                } catch {
                    throw BatonError(.configuration, "the configuration file \(chosen.path) cannot be read: \(error)", field: "config")
                }
                sources.append(.file(chosen.path))
            }
        }
        let tracker = AccessTracker()
        let reader = ConfigReader(providers: providers, accessReporter: tracker)
        var worker: Worker.Configuration
        let http: HTTPSettings
        do {
            worker = try Worker.Configuration(reader: reader, workerID: workerID)
            http = try HTTPSettings(reader: reader)
            let tenants = Set(lines.keys.compactMap(TenantBudgets.tenantName(ofKey:)))
                .union(environment.keys.compactMap(TenantBudgets.tenantName(ofEnvironmentName:)))
            worker.store.tenantBudgets = try TenantBudgets(reader: reader, tenants: tenants)
        } catch let error as BatonError {
            guard let key = error.field else { throw error }
            throw BatonError(.configuration, error.message + tracker.origin(of: key, sources: sources, lines: lines), field: key)
        }
        if let failure = tracker.firstFailure(sources: sources, lines: lines) { throw failure }
        return BatonConfiguration(worker: worker, http: http, file: lines.isEmpty ? nil : chosen?.path)
    }

    /// Walks the YAML file's keys: every leaf must be a known key. Returns each key's line (1-based).
    static func checkKeys(yaml: String, file: String) throws -> [String: Int] {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw BatonError(.configuration, "the configuration file \(file) is not valid YAML: \(error)", field: "config")
        }
        guard let root else { return [:] }
        guard let mapping = root.mapping else {
            throw BatonError(
                .configuration, "the configuration file \(file) must be a mapping of keys (worker: {concurrency: 64}, …)", field: "config")
        }
        var lines: [String: Int] = [:]
        var pending: [(prefix: String, node: Node.Mapping)] = [("", mapping)]
        while let (prefix, mapping) = pending.popLast() {
            for (keyNode, value) in mapping {
                let line = keyNode.mark?.line ?? 0
                guard let name = keyNode.string else {
                    throw BatonError(.configuration, "\(file):\(line): a key that is not a string", field: "config")
                }
                let key = prefix.isEmpty ? name : prefix + "." + name
                if let child = value.mapping {
                    pending.append((key, child))
                    continue
                }
                if ConfigKeys.names.contains(key) || TenantBudgets.tenantName(ofKey: key) != nil {
                    lines[key] = line
                    continue
                }
                // An empty section (`worker:` with every key commented out) is fine.
                if prefix.isEmpty, ConfigKeys.sections.contains(key), value.null != nil { continue }
                let hint = ConfigKeys.suggestion(for: key).map { " (did you mean '\($0)'?)" } ?? ""
                throw BatonError(
                    .configuration,
                    "unknown configuration key '\(key)' in \(file):\(line)\(hint); the keys are listed in Config/baton.yaml",
                    field: key)
            }
        }
        return lines
    }

    /// Where a value came from.
    enum Source {
        case flags, environment
        case file(String)
    }

    /// Records, per key, the providers' answers, to say where a value came from and to catch values a
    /// provider could not convert (a YAML list where a number belongs).
    final class AccessTracker: AccessReporter, Sendable {
        let events = Mutex<[String: AccessEvent]>([:])
        let order = Mutex<[String]>([])

        func report(_ event: AccessEvent) {
            let key = event.metadata.key.components.joined(separator: ".")
            events.withLock { $0[key] = event }
            order.withLock { if !$0.contains(key) { $0.append(key) } }
        }

        static func describe(_ index: Int, encodedKey: String, key: String, sources: [Source], lines: [String: Int]) -> String {
            guard index < sources.count else { return "" }
            switch sources[index] {
            case .flags: return "the command-line flag"
            case .environment: return "the environment variable \(encodedKey)"
            case .file(let path): return lines[key].map { "\(path):\($0)" } ?? path
            }
        }

        /// " (from …)" for a key's value, or "" when it was the default.
        func origin(of key: String, sources: [Source], lines: [String: Int]) -> String {
            guard let event = events.withLock({ $0[key] }) else { return "" }
            for (index, result) in event.providerResults.enumerated() {
                switch result.result {
                case .success(let lookup) where lookup.value != nil:
                    return " (from \(Self.describe(index, encodedKey: lookup.encodedKey, key: key, sources: sources, lines: lines)))"
                case .failure:
                    return
                        " (from \(Self.describe(index, encodedKey: ConfigKeys.Key(name: key, defaultValue: "", summary: "").environmentName, key: key, sources: sources, lines: lines)))"
                default: continue
                }
            }
            return ""
        }

        /// The first value a provider had but could not convert, as an error naming the key and its source.
        func firstFailure(sources: [Source], lines: [String: Int]) -> BatonError? {
            let keys = order.withLock { $0 }
            for key in keys {
                guard let event = events.withLock({ $0[key] }) else { continue }
                for result in event.providerResults {
                    guard case .failure = result.result else { continue }
                    let expected = event.metadata.valueType == .stringArray ? "a list ([a, b] in YAML, a,b elsewhere)" : "a single value"
                    return BatonError(
                        .configuration, "\(key) must be \(expected)" + origin(of: key, sources: sources, lines: lines), field: key)
                }
            }
            return nil
        }
    }
}
