import Baton
import CoreMetrics
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle

/// This process's counters and histograms (``BatonMetrics``) in a Prometheus registry: swift-metrics is
/// bootstrapped with it once per process, on first use (`baton worker --http`, `baton serve`).
public enum ProcessMetrics {
    /// The registry behind `MetricsSystem` (created and bootstrapped once).
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets = BatonMetrics.buckets
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// Bootstraps swift-metrics (idempotent). Call it before the first metric is touched: metrics created
    /// before it stay no-ops.
    public static func bootstrap() { _ = registry }

    /// The Prometheus text of this process's metrics.
    public static func scrape() -> [UInt8] { registry.emitToBuffer() }

    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func response(_ body: [UInt8]) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// `baton worker --http host:port`: the worker's own `/metrics` (its counters), `/healthz` (the process
/// answers) and `/readyz` (it consumes: 503 before its consumers start and once it drains). Nothing else:
/// no API, no authentication — so only a loopback address is allowed unless `allowPublic`.
public struct WorkerHTTPServer: Service {
    public let host: String
    public let port: Int
    let ready: @Sendable () -> Bool
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void

    public init(
        host: String, port: Int, ready: @escaping @Sendable () -> Bool, logger: Logger,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.ready = ready
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        ProcessMetrics.bootstrap()
        let router = Router(context: BasicRequestContext.self)
        router.get("/healthz") { _, _ in Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "{\"status\":\"ok\"}"))) }
        let ready = self.ready
        router.get("/readyz") { _, _ in
            ready()
                ? Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "{\"status\":\"ready\"}")))
                : Response(
                    status: .serviceUnavailable,
                    body: ResponseBody(
                        byteBuffer: ByteBuffer(string: "{\"status\":\"not ready\",\"detail\":\"not consuming (starting or draining)\"}")))
        }
        router.get("/metrics") { _, _ in ProcessMetrics.response(ProcessMetrics.scrape()) }
        let onListening = self.onListening
        let application = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "baton-worker"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) }, logger: logger)
        try await application.run()
    }
}
