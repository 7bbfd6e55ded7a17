import CHiredis
import Testing

@testable import RedisClient

/// The connection encodes each command itself (``RedisCommand/appendRESP(to:)``) and hands hiredis the bytes: they
/// must be exactly what hiredis's own argv formatter writes.
@Suite("RESP encoding")
struct RESPEncodingTests {
    /// hiredis's encoding of the same arguments (`redisFormatCommandArgv`).
    static func hiredis(_ command: RedisCommand) -> [UInt8] {
        let arguments = command.arguments
        var lengths = arguments.map(\.count)
        var joined: [UInt8] = []
        for argument in arguments { joined.append(contentsOf: argument) }
        joined.append(0)  // never empty: a base address to point into
        var target: UnsafeMutablePointer<CChar>?
        let length = joined.withUnsafeBufferPointer { bytes -> Int32 in
            let base = UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self)
            var pointers: [UnsafePointer<CChar>?] = []
            var offset = 0
            for count in lengths {
                pointers.append(base + offset)
                offset += count
            }
            return redisFormatCommandArgv(&target, Int32(arguments.count), &pointers, &lengths)
        }
        guard length > 0, let target else { return [] }
        defer { redisFreeCommand(target) }
        return Array(UnsafeRawBufferPointer(start: target, count: Int(length)))
    }

    static func resp(_ command: RedisCommand) -> [UInt8] {
        var buffer: [UInt8] = []
        command.appendRESP(to: &buffer)
        return buffer
    }

    @Test func aCommandIsAnArrayOfBulkStrings() {
        #expect(Self.resp(RedisCommand("GET", "k")) == Array("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".utf8))
        #expect(Self.resp(RedisCommand("SET", "k", "")) == Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".utf8))
    }

    @Test func everyShapeMatchesHiredis() {
        var generator = SystemRandomNumberGenerator()
        var commands: [RedisCommand] = [
            RedisCommand("PING"), RedisCommand("HSET", "key", "field", 42, "other", -7),
            RedisCommand(bytes: [[0, 13, 10, 255], [], [36]]),
            RedisCommand("SET", "big", [UInt8](repeating: 120, count: 123_456)),
        ]
        for _ in 0..<200 {
            let count = Int.random(in: 1...40, using: &generator)
            commands.append(
                RedisCommand(
                    bytes: (0..<count).map { _ in
                        let length = [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, Int.random(in: 0...5000, using: &generator)]
                            .randomElement(using: &generator)!
                        return (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                    }))
        }
        for command in commands {
            let ours = Self.resp(command)
            let theirs = Self.hiredis(command)
            #expect(ours == theirs, "\(command.count) arguments: \(ours.count) bytes against hiredis's \(theirs.count)")
        }
    }

    @Test func decimalsAreWrittenAsTheStandardLibraryWritesThem() {
        for value in [0, 1, 9, 10, 11, 99, 100, 12_345, 1 << 31, Int.max] {
            var buffer: [UInt8] = []
            RedisCommand.appendDecimal(value, to: &buffer)
            #expect(buffer == Array(String(value).utf8))
        }
    }
}
