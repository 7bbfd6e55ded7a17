import AMQPClient
import Testing

@Suite("AMQP URLs")
struct AMQPURLTests {
    @Test func parsesEveryPart() throws {
        let url = try AMQPURL("amqp://ana%40corp:p%3Ass@rabbit.example:5673/prod%2Fa")
        #expect(url.user == "ana@corp")
        #expect(url.password == "p:ss")
        #expect(url.host == "rabbit.example")
        #expect(url.port == 5673)
        #expect(url.vhost == "prod/a")
    }

    @Test func defaults() throws {
        let url = try AMQPURL("amqp://localhost")
        #expect(url.user == "guest" && url.password == "guest" && url.port == 5672 && url.vhost == "/")
        #expect(try AMQPURL("amqp://h:1/").vhost == "/")
        #expect(try AMQPURL("amqp://u:p@[::1]:5673/v").host == "::1")
    }

    @Test func redactsThePassword() throws {
        let url = try AMQPURL("amqp://bob:hunter2@h:5672/v")
        #expect(url.redacted == "amqp://bob:***@h:5672/v")
        #expect(!url.description.contains("hunter2"))
        #expect(AMQPURL.redact("amqp://bob:hunter2@h:notaport/") == "amqp://bob:***@h:notaport/")
    }

    @Test func rejectsBadURLsWithoutLeakingThePassword() {
        for bad in ["http://u:hunter2@h/", "amqp://u:hunter2@h:99999/", "amqp://u:hunter2@h:x/"] {
            #expect {
                _ = try AMQPURL(bad)
            } throws: { error in
                let text = "\(error)"
                return (error as? AMQPError)?.code == .invalidURL && !text.contains("hunter2")
            }
        }
    }
}
