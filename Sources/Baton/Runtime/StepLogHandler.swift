import Logging

/// The log handler of one step: the worker's handler, with the step's metadata (task, agent, step, attempt, seq)
/// added to what is logged, when something is.
///
/// Setting those keys on the worker's handler itself made a `StreamLogHandler` re-render all of its metadata as
/// text on every step, logged or not: ~1.5 % of a worker's CPU samples on the step chain (docs/benchmarks.md, fourteenth
/// session). Here a step costs one small dictionary; the merge happens only for a message that is logged.
struct StepLogHandler: LogHandler {
    var base: any LogHandler
    /// The step's keys, and any an agent sets on its logger; they win over the worker's keys of the same name,
    /// and a message's own metadata wins over both.
    var step: Logger.Metadata

    init(base: any LogHandler, step: Logger.Metadata) {
        self.base = base
        self.step = step
    }

    func log(event: LogEvent) {
        var event = event
        if let own = event.metadata {
            event.metadata = step.merging(own) { _, message in message }
        } else {
            event.metadata = step
        }
        base.log(event: event)
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { step[key] ?? base[metadataKey: key] }
        set { step[key] = newValue }
    }

    var metadata: Logger.Metadata {
        get { base.metadata.merging(step) { _, step in step } }
        set {
            // Replacing the whole set: the step's keys are part of it, kept here; the rest go to the worker's handler.
            step = newValue
            base.metadata = [:]
        }
    }

    var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { base.metadataProvider }
        set { base.metadataProvider = newValue }
    }
}

extension Logger {
    /// This logger with `metadata` added by a ``StepLogHandler`` (no re-rendering of the handler's metadata).
    func adding(_ metadata: Logger.Metadata) -> Logger {
        var logger = self
        if var handler = logger.handler as? StepLogHandler {
            handler.step.merge(metadata) { _, new in new }
            logger.handler = handler
        } else {
            logger.handler = StepLogHandler(base: logger.handler, step: metadata)
        }
        return logger
    }
}
