import Testing

@testable import Baton

/// The medians that `baton bench stepchain --rounds N` prints after its rounds.
@Suite("Step chain bench: medians over rounds")
struct StepChainSummaryTests {
    static func result(_ hops: Double, raw: Double?, worker: Double = 0.12, verified: Bool = true) -> StepChainBench.Result {
        var result = StepChainBench.Result(
            tasks: 200, steps: 20, hops: 4000, workers: 1, wallSeconds: 4000 / hops, hopsPerSecond: hops, p50Milliseconds: 25,
            p99Milliseconds: 50, workerCPUMillisecondsPerHop: worker, brokerCPUMillisecondsPerHop: 0.1, redisCPUMillisecondsPerHop: 0.11,
            verified: verified, failures: [], rawHopsPerSecond: raw, ratioToRaw: raw.map { hops / $0 })
        // Against a raw loop of 0.08 ms of CPU per hop.
        result.cpuPerHopToRaw = raw.map { _ in (worker + 0.1 + 0.11) / 0.08 }
        return result
    }

    @Test func eachFiguresMedianIsOfItsOwnRoundsAndTheRatioOfEachRoundsPair() throws {
        let summary = StepChainBench.Summary([
            Self.result(5000, raw: 20000, worker: 0.13), Self.result(4000, raw: 20000, worker: 0.11),
            Self.result(5400, raw: 18000, worker: 0.12),
        ])
        #expect(summary.rounds == 3)
        #expect(summary.hopsPerSecond == StepChainBench.Summary.Spread([4000, 5000, 5400]))
        #expect(summary.hopsPerSecond?.median == 5000)
        #expect(summary.rawHopsPerSecond?.median == 20000)
        #expect(summary.workerCPUMillisecondsPerHop?.median == 0.12)
        // The ratios are 0.25, 0.2 and 0.3: their median, not median hops over median raw (5000 / 20000 = 0.25).
        let ratio = try #require(summary.ratioToRaw)
        #expect(abs(ratio.median - 0.25) < 1e-12)
        #expect(abs(ratio.min - 0.2) < 1e-12)
        #expect(abs(ratio.max - 0.3) < 1e-12)
        // Each round's own CPU ratio: 0.34, 0.32 and 0.33 over 0.08.
        let cpu = try #require(summary.cpuPerHopToRaw)
        #expect(abs(cpu.min - 4.0) < 1e-12)
        #expect(abs(cpu.median - 4.125) < 1e-12)
        #expect(abs(cpu.max - 4.25) < 1e-12)
        #expect(summary.verified)
    }

    @Test func anEvenCountTakesTheMeanOfTheMiddleTwoAndOneFailedRoundIsNotVerified() {
        let summary = StepChainBench.Summary([
            Self.result(4000, raw: nil), Self.result(4600, raw: nil), Self.result(5000, raw: nil, verified: false),
            Self.result(3000, raw: nil),
        ])
        #expect(summary.hopsPerSecond?.median == 4300)
        #expect(summary.hopsPerSecond?.min == 3000)
        #expect(summary.hopsPerSecond?.max == 5000)
        #expect(summary.rawHopsPerSecond == nil)
        #expect(summary.ratioToRaw == nil)
        #expect(summary.cpuPerHopToRaw == nil)
        #expect(!summary.verified)
        #expect(!StepChainBench.Summary([]).verified)
    }
}
