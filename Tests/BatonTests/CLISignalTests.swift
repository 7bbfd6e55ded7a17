import Baton
import Foundation
import TestSupport
import Testing

extension CLITests {
    @Test func aBadSignalNameOrPayloadIsAUsageError() async throws {
        let badName = try await Self.baton(["signal", "some-task", "no spaces"])
        #expect(badName.status == 64)
        #expect(badName.error.contains("signal name"))
        let badPayload = try await Self.baton(["approve", "some-task", "--payload", "{not json"])
        #expect(badPayload.status == 64)
        #expect(badPayload.error.contains("--payload"))
    }

    @Test(.enabled(if: TestServers.available)) func signalsToMissingOrEndedTasksExit4And5() async throws {
        let missing = TestServers.uniqueName("cli-missing")
        let notFound = try await Self.baton(["signal", missing, "callback", "--payload", #"{"a": 1}"#])
        #expect(notFound.status == 4)
        #expect(notFound.output.contains("no such task"))

        let (_, ids) = try await Self.cancelledTasks(1)
        let ended = try await Self.baton(["reject", ids[0], "--reason", "too late", "--json"])
        #expect(ended.status == 5)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(ended.output.utf8)) as? [String: Any])
        #expect(object["result"] as? String == "terminal")
        #expect(object["status"] as? String == "cancelled")
        #expect(object["signal"] as? String == "reject")
        #expect(object["reason"] as? String == "too late")
        #expect(ended.error.contains("already ended"))
    }
}
