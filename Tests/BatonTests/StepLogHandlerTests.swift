import Logging
import Synchronization
import Testing

@testable import Baton

/// The per-step logger: the step's keys reach every message logged through it, without being written into the
/// worker's handler (whose metadata a stream handler re-renders on each change).
@Suite("Step log handler")
struct StepLogHandlerTests {
    /// Records each message with the handler's own metadata and the message's, as a stream handler would merge them.
    final class Recorder: Sendable {
        let lines = Mutex<[String]>([])
        let metadataWrites = Mutex(0)
    }

    struct RecordingHandler: LogHandler {
        let recorder: Recorder
        var logLevel: Logger.Level = .info
        var metadata: Logger.Metadata = [:] {
            didSet { recorder.metadataWrites.withLock { $0 += 1 } }
        }

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            let text = merged.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ")
            recorder.lines.withLock { $0.append("\(event.level) \(event.message) \(text)") }
        }
    }

    static func workerLogger(_ recorder: Recorder) -> Logger {
        var logger = Logger(label: "worker") { _ in RecordingHandler(recorder: recorder) }
        logger[metadataKey: "worker.id"] = "w-1"
        return logger
    }

    @Test func aStepsKeysReachItsMessagesAndLeaveTheWorkersHandlerAlone() {
        let recorder = Recorder()
        let worker = Self.workerLogger(recorder)
        let writesBefore = recorder.metadataWrites.withLock { $0 }
        let step = worker.adding(["task.id": "t-1", "step.name": "append"])
        #expect(recorder.metadataWrites.withLock { $0 } == writesBefore)

        step.warning("checkpoint over the cap", metadata: ["error": "too big"])
        worker.info("between steps")
        step.debug("below the level: not logged")
        #expect(
            recorder.lines.withLock { $0 } == [
                "warning checkpoint over the cap error=too big step.name=append task.id=t-1 worker.id=w-1",
                "info between steps worker.id=w-1",
            ])
        #expect(step[metadataKey: "task.id"] == "t-1")
        #expect(step[metadataKey: "worker.id"] == "w-1")
        #expect(worker[metadataKey: "task.id"] == nil)
    }

    @Test func aMessagesOwnKeysWinThenTheStepsThenTheWorkers() {
        let recorder = Recorder()
        var worker = Self.workerLogger(recorder)
        worker[metadataKey: "task.id"] = "from-worker"
        var step = worker.adding(["task.id": "t-2", "task.seq": "3"])
        // An agent adding a key of its own, and a second layer of step keys, stay on the step's handler.
        step[metadataKey: "doc"] = "7"
        step = step.adding(["task.seq": "4"])
        #expect(step.handler is StepLogHandler)
        step.error("failed", metadata: ["doc": "8"])
        #expect(recorder.lines.withLock { $0 } == ["error failed doc=8 task.id=t-2 task.seq=4 worker.id=w-1"])
        #expect(step.handler.metadata["task.id"] == "t-2")
        #expect(step.handler.metadata["worker.id"] == "w-1")

        // The level is the worker's handler's.
        step.logLevel = .debug
        step.debug("now logged")
        #expect(recorder.lines.withLock { $0 }.last?.hasPrefix("debug now logged") == true)
    }
}
