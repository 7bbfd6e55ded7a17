import Testing

@testable import Baton

@Suite("Sweep pauses")
struct SweepPausesTests {
    /// Starts a ten-minute pause, ends it with `end` after 50 ms, and says whether it returned well before its time
    /// (bounds far from both outcomes).
    static func endsAPause(_ end: (SweepPauses, Task<Void, Never>) -> Void) async throws -> Bool {
        let pauses = SweepPauses()
        let clock = ContinuousClock()
        let start = clock.now
        let sleeping = Task { await pauses.pause(for: .seconds(600)) }
        try await Task.sleep(for: .milliseconds(50))
        end(pauses, sleeping)
        await sleeping.value
        return clock.now - start < .seconds(120)
    }

    /// A stopping worker is not held by a sweep's long period (the retention sweep's is a minute).
    @Test func stopEndsAPauseInProgressAndEveryLaterOne() async throws {
        #expect(try await Self.endsAPause { pauses, _ in pauses.stop() })
        let pauses = SweepPauses()
        pauses.stop()
        let clock = ContinuousClock()
        let start = clock.now
        await pauses.pause(for: .seconds(600))
        #expect(clock.now - start < .seconds(120))
    }

    @Test func cancellingThePausingTaskEndsItsPause() async throws {
        #expect(try await Self.endsAPause { _, sleeping in sleeping.cancel() })
    }

    @Test func aPauseSleepsItsIntervalWhileNotStopped() async throws {
        let pauses = SweepPauses()
        let clock = ContinuousClock()
        let start = clock.now
        await pauses.pause(for: .milliseconds(200))
        #expect(clock.now - start >= .milliseconds(200))
    }
}
