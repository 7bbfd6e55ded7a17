import Baton
import Testing

@Suite("Endpoints: flag > environment > local servers")
struct EndpointsTests {
    let environment = ["BATON_AMQP_URL": "amqp://u:p@rabbit.example:5672/v", "BATON_REDIS_URL": "redis://cache.example:6379/2"]

    @Test func flagWinsOverEnvironment() {
        #expect(Endpoints.amqpURL(flag: "amqp://flag:5672/", environment: environment) == "amqp://flag:5672/")
        #expect(Endpoints.redisURL(flag: "redis://flag:6379/1", environment: environment) == "redis://flag:6379/1")
    }

    @Test func environmentWinsOverLocalDefault() {
        #expect(Endpoints.amqpURL(flag: nil, environment: environment) == "amqp://u:p@rabbit.example:5672/v")
        #expect(Endpoints.redisURL(flag: nil, environment: environment) == "redis://cache.example:6379/2")
    }

    @Test func emptyValuesFallThroughToTheLocalServers() {
        let empty = ["BATON_AMQP_URL": "", "BATON_REDIS_URL": ""]
        #expect(Endpoints.amqpURL(flag: "", environment: empty) == "amqp://guest:guest@127.0.0.1:5673/")
        #expect(Endpoints.redisURL(flag: "", environment: empty) == "redis://127.0.0.1:6390/0")
    }

    @Test func localDefaultsAreWhatServicesStartRuns() {
        let configuration = LocalServices.Configuration(environment: ["HOME": "/home/ana"])
        #expect(configuration.amqpURL == Endpoints.localAMQPURL)
        #expect(configuration.redisURL == Endpoints.localRedisURL)
        #expect(Endpoints.amqpURL(environment: [:]) == configuration.amqpURL)
        #expect(Endpoints.redisURL(environment: [:]) == configuration.redisURL)
    }

    @Test func servicesFolderComesFromTheEnvironmentThenHome() {
        #expect(LocalServices.Configuration.defaultDirectory(environment: ["HOME": "/home/ana"]) == "/home/ana/.baton/services")
        #expect(
            LocalServices.Configuration.defaultDirectory(environment: ["HOME": "/home/ana", "BATON_SERVICES_DIR": "/srv/baton"])
                == "/srv/baton")
        #expect(LocalServices.Configuration(environment: ["BATON_SERVICES_DIR": "/srv/baton"]).directory == "/srv/baton")
    }
}
