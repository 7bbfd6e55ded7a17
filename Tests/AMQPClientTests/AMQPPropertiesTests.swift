import AMQPClient
import Testing

/// `AMQPProperties` keeps value semantics over its copy-on-write storage.
@Suite("AMQP properties: value semantics")
struct AMQPPropertiesTests {
    @Test func aCopyIsIndependentOfItsOriginal() {
        var original = AMQPProperties.persistentJSON
        original.messageID = "m-1"
        var copy = original
        copy.messageID = "m-2"
        copy.headers = ["x": .string("y")]
        #expect(original.messageID == "m-1")
        #expect(original.headers == nil)
        #expect(copy.messageID == "m-2")
        #expect(copy.contentType == "application/json")
        #expect(copy.deliveryMode == 2)
        #expect(original != copy)
    }

    @Test func emptyPropertiesShareNothingWhenWritten() {
        var a = AMQPProperties()
        let b = AMQPProperties()
        a.replyTo = "amq.rabbitmq.reply-to"
        #expect(a.replyTo == "amq.rabbitmq.reply-to")
        #expect(b.replyTo == nil)
        #expect(AMQPProperties() == b)
    }

    @Test func equalValuesHashAlikeWhateverTheirStorage() {
        var a = AMQPProperties(contentType: "text/plain", timestamp: 7)
        a.appID = "baton"
        let b = AMQPProperties(contentType: "text/plain", timestamp: 7, appID: "baton")
        #expect(a == b)
        #expect(a.hashValue == b.hashValue)
        #expect(Set([a, b]).count == 1)
        var c = b
        c.timestamp = 8
        #expect(c != b)
    }
}
