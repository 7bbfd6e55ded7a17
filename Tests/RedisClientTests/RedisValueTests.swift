import Foundation
import RedisClient
import Testing

@Suite("Commands, replies and scripts without a server")
struct RedisValueTests {
    @Test func commandEncodesEveryArgumentKind() {
        let command = RedisCommand("hset", "key", [0x00, 0xFF] as [UInt8], 42, 1.5, Data([0x0D, 0x0A]), "é")
        #expect(command.name == "HSET")
        #expect(command.count == 7)
        #expect(
            command.arguments == [
                Array("hset".utf8), Array("key".utf8), [0x00, 0xFF], Array("42".utf8), Array("1.5".utf8), [0x0D, 0x0A], [0xC3, 0xA9],
            ]
        )
        #expect(command.byteCount == 4 + 3 + 2 + 2 + 3 + 2 + 2)
    }

    @Test func nameNeverShowsAnOddFirstArgument() {
        #expect(RedisCommand(bytes: [[0xFF, 0x00], Array("x".utf8)]).name == "?")
        #expect(RedisCommand(bytes: [Array("my secret".utf8)]).name == "?")
        #expect(RedisCommand("client", "kill").name == "CLIENT")
    }

    @Test func emptyArgumentsAreKept() {
        let command = RedisCommand("SET", "", "")
        #expect(command.arguments == [Array("SET".utf8), [], []])
    }

    @Test func scriptSHA1MatchesKnownDigests() {
        // FIPS 180 test vectors, and a multi-block message.
        #expect(RedisScript("").sha1 == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(RedisScript("abc").sha1 == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(
            RedisScript("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").sha1
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        )
        #expect(RedisScript(String(repeating: "a", count: 1000)).sha1 == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
    }

    @Test func evalSHACommandCarriesKeyCount() {
        let script = RedisScript("return 1")
        let command = RedisCommand.evalSHA(script, keys: ["a", "b"], args: [7])
        #expect(command.name == "EVALSHA")
        #expect(command.arguments.map { String(decoding: $0, as: UTF8.self) } == ["EVALSHA", script.sha1, "2", "a", "b", "7"])
    }

    @Test func replyHelpers() {
        #expect(RedisReply.bulkString(Array("12".utf8)).int == 12)
        #expect(RedisReply.bulkString(Array("1.25".utf8)).double == 1.25)
        #expect(RedisReply.bulkString([0x68, 0x69]).string == "hi")
        #expect(RedisReply.status("OK").string == "OK")
        #expect(RedisReply.status("OK").bytes == Array("OK".utf8))
        #expect(RedisReply.integer(5).int == 5)
        #expect(RedisReply.integer(5).bytes == nil)
        #expect(RedisReply.null.isNull)
        #expect(RedisReply.null.string == nil)
        #expect(RedisReply.array([.integer(1), .null]).array == [.integer(1), .null])
        #expect(RedisReply.error("ERR x").errorMessage == "ERR x")
        #expect(RedisReply.error("ERR x").string == nil)
        #expect(!RedisReply.integer(0).isError)
    }

    @Test func errorCodesDescribeThemselves() {
        let error = RedisError(code: .connectionLost, command: "GET", message: "lost")
        #expect("\(error)" == "RedisError.connectionLost: lost")
        #expect(RedisError.Code.server != RedisError.Code.noScript)
    }
}
