import Testing

@testable import Baton

@Suite("Sweep pauses")
struct SweepPausesTests {
    /// A stopping worker is not held by a sweep's long period (the retention sweep's is a minute).
    @Test func stopEndsAPauseInProgressAndEveryLaterOne() async throws {
        let pauses = SweepPauses()
        let clock = ContinuousClock()
        let start = clock.now
        let sleeping = Task { await pauses.pause(for: .seconds(600)) }
        try await Task.sleep(for: .milliseconds(50))
        pauses.stop()
        await sleeping.value
        await pauses.pause(for: .seconds(600))
        // Bounds far from both outcomes: the pauses asked for ten minutes each.
        #expect(clock.now - start < .seconds(120))
    }

    @Test func aPauseSleepsItsIntervalWhileNotStopped() async throws {
        let pauses = SweepPauses()
        let clock = ContinuousClock()
        let start = clock.now
        await pauses.pause(for: .milliseconds(200))
        #expect(clock.now - start >= .milliseconds(200))
    }

    @Test func cancellingThePausingTaskEndsItsPause() async throws {
        let pauses = SweepPauses()
        let clock = ContinuousClock()
        let start = clock.now
        let sleeping = Task { await pauses.pause(for: .seconds(600)) }
        try await Task.sleep(for: .milliseconds(50))
        sleeping.cancel()
        await sleeping.value
        #expect(clock.now - start < .seconds(120))
    }
}
