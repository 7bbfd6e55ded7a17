// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Baton",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AMQPClient", targets: ["AMQPClient"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .library(name: "Baton", targets: ["Baton"]),
        .library(name: "BatonTesting", targets: ["BatonTesting"]),
        .library(name: "BatonExamples", targets: ["BatonExamples"]),
        .library(name: "BatonHTTP", targets: ["BatonHTTP"]),
        .executable(name: "baton", targets: ["baton"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: [.defaults, "YAML"]),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        // Already a dependency of Hummingbird; named for `HTTPField.Name` (custom headers).
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Already a dependency of swift-prometheus; named for the worker's metrics (`BatonMetrics`).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .target(
            name: "AMQPClient",
            dependencies: ["CRabbitMQ", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "RedisClient",
            dependencies: ["CHiredis", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "Baton",
            dependencies: [
                "AMQPClient", "RedisClient", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(name: "BatonExamples", dependencies: ["Baton"]),
        .target(
            name: "BatonHTTP",
            dependencies: [
                "Baton", "RedisClient", .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Dashboard")]
        ),
        .target(name: "BatonTesting", dependencies: ["Baton", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "baton",
            dependencies: [
                "Baton", "BatonExamples", "BatonHTTP", "AMQPClient", "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(name: "TestSupport", dependencies: ["Baton"], path: "Tests/TestSupport"),
        .testTarget(name: "AMQPClientTests", dependencies: ["AMQPClient", "CRabbitMQ", "TestSupport"]),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "CHiredis", "TestSupport"]),
        .testTarget(
            name: "BatonTests",
            dependencies: [
                "Baton", "BatonExamples", "BatonTesting", "BatonHTTP", "AMQPClient", "RedisClient", "TestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "BatonHTTPTests", dependencies: ["BatonHTTP", "Baton", "BatonExamples", "RedisClient", "TestSupport"]),
    ]
)

// libFuzzer targets (issue 7): only when `BATON_FUZZ` is set, as `scripts/fuzz` sets it with
// `--sanitize=fuzzer --sanitize=address` in a scratch directory of its own; `swift build` and CI never build them.
if Context.environment["BATON_FUZZ"] != nil {
    package.targets.append(
        .executableTarget(
            name: "BatonFuzz", dependencies: ["Baton", "BatonExamples", "RedisClient", "CHiredis"], path: "Tests/fuzz/BatonFuzz"))
}
