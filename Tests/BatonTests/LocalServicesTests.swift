import Foundation
import TestSupport
import Testing

@testable import Baton

/// The shared servers that `scripts/test` starts are only inspected and "started" again (a no-op) here; what
/// is stopped is always a server these tests started themselves, in a folder and on ports of their own.
@Suite("LocalServices")
struct LocalServicesTests {
    static var sharedServersAreLocal: Bool {
        TestServers.available && TestServers.amqpURL == Endpoints.localAMQPURL && TestServers.redisURL == Endpoints.localRedisURL
    }

    static var rabbitMQInstalled: Bool { FileManager.default.isExecutableFile(atPath: "/usr/lib/rabbitmq/bin/rabbitmq-server") }
    static var redisInstalled: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server") }

    @Test(.enabled(if: sharedServersAreLocal))
    func statusReportsTheRunningServers() async {
        let status = await LocalServices().status()
        #expect(status.rabbitmq?.running == true)
        #expect(status.rabbitmq?.url == Endpoints.localAMQPURL)
        #expect(status.rabbitmq?.port == 5673)
        #expect(status.redis?.running == true)
        #expect(status.redis?.url == Endpoints.localRedisURL)
        #expect(status.redis?.port == 6390)
        if let pid = status.rabbitmq?.pid { #expect(ProcessInspector.isAlive(pid: pid, command: "beam.smp")) }
        if let pid = status.redis?.pid { #expect(ProcessInspector.isAlive(pid: pid, command: "redis-server")) }
    }

    @Test(.enabled(if: sharedServersAreLocal), .timeLimit(.minutes(4)))
    func startTwiceLeavesTheRunningServersAlone() async throws {
        let services = LocalServices()
        let first = try await services.start()
        let second = try await services.start()
        #expect(first.map(\.service) == [.rabbitmq, .redis])
        #expect(second.allSatisfy { $0.alreadyRunning })
        #expect(first.map(\.pid) == second.map(\.pid))
        let status = await services.status()
        #expect(status.rabbitmq?.running == true)
        #expect(status.redis?.running == true)
        #expect(status.rabbitmq?.pid == second[0].pid)
        #expect(status.redis?.pid == second[1].pid)
    }

    @Test(.enabled(if: TestServers.required || redisInstalled), .timeLimit(.minutes(1)))
    func redisStartStopLeavesNothingRunning() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        var configuration = sandbox.configuration
        configuration.services = [.redis]
        let services = LocalServices(configuration: configuration)

        let started = try #require(try await services.start().first)
        #expect(!started.alreadyRunning)
        #expect(started.startedByBaton)
        let pid = try #require(started.pid)
        #expect(ProcessInspector.isAlive(pid: pid, command: "redis-server"))
        #expect(
            ProcessInspector.findPid(command: "redis-server", arguments: ["127.0.0.1:\(configuration.redisPort)"]) == pid,
            "found by the port in its title")
        #expect(PortProbe.redis(port: configuration.redisPort) == .ready)
        #expect(FileManager.default.fileExists(atPath: sandbox.directory + "/redis/appendonlydir"))

        let again = try #require(try await services.start().first)
        #expect(again.alreadyRunning)
        #expect(again.pid == pid)
        let status = try #require(await services.status().redis)
        #expect(
            status
                == LocalServices.ServiceStatus(
                    running: true, url: configuration.redisURL, port: configuration.redisPort, pid: pid, startedByBaton: true,
                    log: sandbox.directory + "/redis/redis.log"))

        let stopped = try #require(try await services.stop().first)
        #expect(stopped.stopped)
        #expect(stopped.pid == pid)
        #expect(!stopped.killed)
        #expect(!ProcessInspector.isAlive(pid: pid, command: "redis-server"))
        #expect(PortProbe.redis(port: configuration.redisPort) == .closed)
        #expect(await services.status().redis?.running == false)

        let secondStop = try #require(try await services.stop().first)
        #expect(!secondStop.stopped)
        #expect(secondStop.pid == nil)
    }

    @Test(.enabled(if: TestServers.required || rabbitMQInstalled), .timeLimit(.minutes(3)))
    func rabbitMQNodeStartStopLeavesNothingRunning() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        var configuration = sandbox.configuration
        configuration.services = [.rabbitmq]
        let services = LocalServices(configuration: configuration)

        let started = try #require(try await services.start().first)
        #expect(!started.alreadyRunning)
        let pid = try #require(started.pid)
        #expect(ProcessInspector.isAlive(pid: pid, command: "beam.smp"))
        #expect(LocalServices.findRabbitMQNode(home: services.rabbitMQPaths.home) == pid, "found by its -home argument")
        #expect(PortProbe.amqp(port: configuration.amqpPort) == .ready)
        let again = try #require(try await services.start().first)
        #expect(again.alreadyRunning && again.pid == pid)

        let stopped = try #require(try await services.stop().first)
        #expect(stopped.stopped && stopped.pid == pid)
        #expect(!ProcessInspector.isAlive(pid: pid, command: "beam.smp"))
        #expect(LocalServices.findRabbitMQNode(home: services.rabbitMQPaths.home) == nil)
        #expect(PortProbe.amqp(port: configuration.amqpPort) == .closed)
        #expect(!PortProbe.isOpen(port: configuration.rabbitMQDistributionPort))
        #expect(try #require(try await services.stop().first).stopped == false)
    }

    /// A start that gives up on a node still booting (the start timeout passed) stops that node: nothing would record
    /// it, so `baton services stop` could not find it, and it would hold the ports the next start needs (a test whose
    /// start failed so left its node running until it was killed by hand, 2026-11-24).
    @Test(.enabled(if: TestServers.required || rabbitMQInstalled), .timeLimit(.minutes(4)))
    func aStartThatTimesOutStopsTheNodeItLaunched() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        var configuration = sandbox.configuration
        configuration.services = [.rabbitmq]
        configuration.startTimeout = .seconds(3)
        let services = LocalServices(configuration: configuration)
        let error = await #expect(throws: LocalServicesError.self) { try await services.start() }
        #expect(error?.code == .timedOut, "\(String(describing: error))")
        #expect(error?.message.contains("was stopped") == true, "\(String(describing: error))")
        #expect(LocalServices.findRabbitMQNode(home: services.rabbitMQPaths.home) == nil, "no node of this start is left running")
        #expect(PortProbe.amqp(port: configuration.amqpPort) == .closed)
    }

    /// A node whose Erlang distribution port another program holds halts before it logs a line or writes its pid
    /// file. The start says so (`startFailed`, with the crash dump's reason) as soon as the node's process is gone (or
    /// no process showed up within the grace after the launcher), not with `timedOut` at the end of the start timeout.
    @Test(.enabled(if: TestServers.required || rabbitMQInstalled), .timeLimit(.minutes(4)))
    func aNodeThatHaltsWhileBootingFailsFastNamingItsFiles() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let listener = try SilentListener()
        defer { listener.close() }
        var configuration = sandbox.configuration
        configuration.services = [.rabbitmq]
        configuration.rabbitMQDistributionPort = listener.port
        configuration.startTimeout = .seconds(90)
        let services = LocalServices(configuration: configuration)
        let error = await #expect(throws: LocalServicesError.self) { try await services.start() }
        #expect(error?.code == .startFailed, "\(String(describing: error))")
        #expect(error?.message.contains("exited while starting") == true, "\(String(describing: error))")
        #expect(error?.message.contains("launcher.out") == true)
        #expect(
            error?.message.contains("distribution port \(listener.port) on 127.0.0.1 is in use by another program") == true,
            "the crash dump's reason, in words: \(String(describing: error))")
        #expect(LocalServices.findRabbitMQNode(home: services.rabbitMQPaths.home) == nil)
        #expect(PortProbe.amqp(port: configuration.amqpPort) == .closed)
    }

    @Test func aMissingServerNamesTheDebianPackage() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        var configuration = sandbox.configuration
        configuration.services = [.redis]
        configuration.redisServerPath = sandbox.directory + "/no-such-redis-server"
        let error = await #expect(throws: LocalServicesError.self) { try await LocalServices(configuration: configuration).start() }
        #expect(error?.code == .notInstalled)
        #expect(error?.code.isConfigurationError == true)
        #expect(error?.message.contains("apt-get install redis-server") == true)
    }

    @Test(.timeLimit(.minutes(1)))
    func aPortHeldByAnotherProgramIsAClearError() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let listener = try SilentListener()
        defer { listener.close() }
        var configuration = sandbox.configuration
        configuration.services = [.redis]
        configuration.redisPort = listener.port
        let error = await #expect(throws: LocalServicesError.self) { try await LocalServices(configuration: configuration).start() }
        #expect(error?.code == .portInUse)
        #expect(error?.message.contains("port \(listener.port)") == true)
    }
}

/// A services folder and free ports of its own, removed afterwards.
struct Sandbox {
    let directory: String
    let configuration: LocalServices.Configuration

    init() throws {
        directory = FileManager.default.temporaryDirectory.path + "/" + TestServers.uniqueName("baton-services-test")
        var configuration = LocalServices.Configuration(environment: ["BATON_SERVICES_DIR": directory])
        configuration.amqpPort = try TestPorts.free()
        configuration.rabbitMQDistributionPort = try TestPorts.free()
        configuration.redisPort = try TestPorts.free()
        configuration.rabbitMQNodeName = TestServers.uniqueName("batontest").replacingOccurrences(of: ".", with: "-") + "@localhost"
        configuration.startTimeout = .seconds(120)
        self.configuration = configuration
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    /// Starts this sandbox's servers (after `prepare`, which may write their configuration), runs `body` against them,
    /// and stops them, also when `body` throws. Returns how they stopped.
    @discardableResult
    func withServices(
        prepare: (LocalServices) throws -> Void = { _ in }, _ body: (LocalServices) async throws -> Void
    ) async throws -> [LocalServices.StopResult] {
        let services = LocalServices(configuration: configuration)
        try prepare(services)
        _ = try await services.start()
        do {
            try await body(services)
        } catch {
            _ = try? await services.stop()
            throw error
        }
        return try await services.stop()
    }
}
