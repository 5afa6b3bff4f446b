// swift-tools-version: 6.2
// Parley: self-hosted, end-to-end encrypted, peer-to-peer audio meetings.
//
// Layering (dependencies point down only; docs/ARCHITECTURE.md, checked by Scripts/check-deps):
//   executables   parleyd · parley · parley-rendezvous          (thin mains; ParleyCommandLine)
//   engines       ParleyNode · RendezvousServer · RendezvousClient (services)
//   domain        MeetingCore (sans-I/O) · ParleyProtocol · ParleyAudio · ControlAPI · RendezvousWire
//   wrappers      Sodium · Opus · OggOpus · ICE · PulseAudio · SpeexDSP (the only importers of the C modules)
//   pure core     ParleyCore                                    (no C: byte codecs, windows, rings, rate limits)
//   C             CSodium · COpus(+Shims) · COpusEnc · CNice(+Shims) · CPulse · CSpeexDSP
// Tools/ holds what does not ship (test support, simulator, labs, benchmarks, fuzzing); Plugins/
// the build plugin that makes VERSION into ParleyVersion.string.
//
// `parley` and `parley-rendezvous` never link libnice, libopus or libpulse (Scripts/check-links).
import PackageDescription

/// Settings for every Parley Swift target: Swift 6 language mode (strict concurrency) is the
/// default of this tools version; warnings fail the build only in Scripts/test, via
/// `-Xswiftc -warnings-as-errors`, so a local edit loop is not blocked by one.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// What the rendezvous server and client both build on (docs/PROTOCOL.md §4): the wire format, the
/// join proof, and WebSocket over TCP or TLS on SwiftNIO.
let rendezvousDependencies: [Target.Dependency] = [
    "RendezvousWire", "ParleyProtocol", "ParleyCore", "Sodium",
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "NIOHTTP1", package: "swift-nio"),
    .product(name: "NIOWebSocket", package: "swift-nio"),
    .product(name: "NIOSSL", package: "swift-nio-ssl"),
    .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
    .product(name: "Logging", package: "swift-log"),
]

let package = Package(
    name: "Parley",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "parleyd", targets: ["parleyd"]),
        .executable(name: "parley", targets: ["parley"]),
        .executable(name: "parley-rendezvous", targets: ["parley-rendezvous"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // Rendezvous server and client (issue 5).
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // MARK: C libraries (pkg-config; apt providers) and shims for what Swift cannot call.
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "COpus", pkgConfig: "opus", providers: [.apt(["libopus-dev"])]),
        // libopusenc: Ogg Opus files (`parley record`).
        .systemLibrary(name: "COpusEnc", pkgConfig: "libopusenc", providers: [.apt(["libopusenc-dev"])]),
        .systemLibrary(name: "CNice", pkgConfig: "nice", providers: [.apt(["libnice-dev"])]),
        .systemLibrary(name: "CPulse", pkgConfig: "libpulse-simple", providers: [.apt(["libpulse-dev"])]),
        .systemLibrary(name: "CSpeexDSP", pkgConfig: "speexdsp", providers: [.apt(["libspeexdsp-dev"])]),
        .target(name: "COpusShims", dependencies: ["COpus"]),
        .target(name: "CNiceShims", dependencies: ["CNice"]),

        // MARK: Swift wrappers: each is the only importer of its C module; no C type is public.
        .target(name: "Sodium", dependencies: ["CSodium"], swiftSettings: swiftSettings),
        .target(name: "Opus", dependencies: ["COpus", "COpusShims"], swiftSettings: swiftSettings),
        .target(name: "OggOpus", dependencies: ["COpusEnc"], swiftSettings: swiftSettings),
        .target(
            name: "ICE",
            dependencies: ["CNice", "CNiceShims", "ParleyCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(name: "PulseAudio", dependencies: ["CPulse"], swiftSettings: swiftSettings),
        .target(name: "SpeexDSP", dependencies: ["CSpeexDSP"], swiftSettings: swiftSettings),

        // MARK: Pure Swift core (no C). ParleyVersion.string comes from the VERSION file.
        .target(name: "ParleyCore", swiftSettings: swiftSettings, plugins: ["ParleyVersion"]),
        .plugin(name: "ParleyVersion", capability: .buildTool()),

        // MARK: Protocol and cryptography (docs/PROTOCOL.md).
        .target(name: "ParleyProtocol", dependencies: ["Sodium", "ParleyCore"], swiftSettings: swiftSettings),

        // MARK: Audio engine: devices, capture/playback threads, per-peer receive channels, mixer.
        .target(
            name: "ParleyAudio",
            dependencies: ["Opus", "OggOpus", "PulseAudio", "SpeexDSP", "ParleyCore", "ParleyProtocol"],
            swiftSettings: swiftSettings),

        // MARK: Control API between parley (CLI) and parleyd (daemon): types, framing, client.
        .target(name: "ControlAPI", dependencies: ["ParleyCore"], swiftSettings: swiftSettings),

        // MARK: The meeting's logic, sans-I/O: inputs and the time in, commands out.
        .target(
            name: "MeetingCore", dependencies: ["ControlAPI", "ParleyCore", "ParleyProtocol", "RendezvousWire"],
            swiftSettings: swiftSettings),

        // MARK: The node engine (daemon library).
        .target(
            name: "ParleyNode",
            dependencies: [
                "ControlAPI", "MeetingCore", "ParleyCore",
                "ParleyProtocol", "ParleyAudio", "ICE", "RendezvousClient", "RendezvousServer",
                "RendezvousWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // TLS to `turns:` servers, which libnice cannot speak itself (TURNTLSTunnel.swift).
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Rendezvous (docs/PROTOCOL.md §4): wire format (pure Swift, fuzzed), server, client.
        .target(name: "RendezvousWire", dependencies: ["ParleyCore"], swiftSettings: swiftSettings),
        .target(
            name: "RendezvousServer",
            dependencies: rendezvousDependencies + [
                .product(name: "Prometheus", package: "swift-prometheus"),
                // HMAC-SHA1 for TURN REST credentials (coturn's use-auth-secret).
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RendezvousClient",
            dependencies: rendezvousDependencies + [.product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),

        // MARK: What the executables share: one-line errors.
        .target(
            name: "ParleyCommandLine",
            dependencies: ["ParleyCore", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings),

        // MARK: Executables (thin mains).
        .executableTarget(
            name: "parleyd",
            dependencies: [
                "ParleyCore", "ParleyCommandLine",
                "ParleyNode", "ParleyAudio", "ControlAPI", "ParleyProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "parley",
            dependencies: [
                "ParleyCore", "ControlAPI", "ParleyCommandLine",
                "ParleyProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "parley-rendezvous",
            dependencies: [
                "ParleyCore", "RendezvousServer", "RendezvousWire", "ParleyCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tools (Tools/): test support, labs, benchmarks and fuzzing; none of it is shipped.
        .target(
            name: "ParleyTestSupport", dependencies: ["ParleyCore"], path: "Tools/ParleyTestSupport",
            swiftSettings: swiftSettings),
        .target(
            name: "ICETestSupport", dependencies: ["ICE"], path: "Tools/ICETestSupport", swiftSettings: swiftSettings),
        // Whole meetings of cores on a virtual clock, for MeetingCoreTests.
        .target(
            name: "MeetingSimulation",
            dependencies: ["MeetingCore", "ControlAPI", "ParleyCore", "ParleyProtocol", "RendezvousWire", "Sodium"],
            path: "Tools/MeetingSimulation", swiftSettings: swiftSettings),
        // Meetings of the real executables (parley-rendezvous, parleyd, parley) on 127.0.0.1 and in
        // the NAT lab; NodeLab runs them (also for Scripts/demo and Scripts/bench-node).
        .target(name: "CSpawn", path: "Tools/CSpawn"),
        .target(
            name: "NodeLab", dependencies: ["ControlAPI", "ParleyCore", "ParleyTestSupport", "CSpawn"],
            path: "Tools/NodeLab", swiftSettings: swiftSettings),
        .executableTarget(
            name: "parley-lab",
            dependencies: [
                "NodeLab", "ControlAPI", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/parley-lab", swiftSettings: swiftSettings),
        // The NAT lab's ICE matrix (Scripts/natlab test) and the loopback benchmark (Scripts/bench-ice).
        .target(name: "CNetNamespace", path: "Tools/CNetNamespace"),
        .executableTarget(
            name: "ice-lab",
            dependencies: [
                "ICE", "ICETestSupport", "ParleyTestSupport", "CNetNamespace",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/ice-lab", swiftSettings: swiftSettings),
        .executableTarget(
            name: "ice-bench", dependencies: ["ICE", "ICETestSupport"], path: "Tools/ice-bench",
            swiftSettings: swiftSettings),
        // Benchmarks (Scripts/bench-*): executables that print figures.
        .executableTarget(
            name: "rendezvous-bench",
            dependencies: [
                "RendezvousWire", "ParleyProtocol", "Sodium", "RendezvousClient", "NodeLab",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Tools/rendezvous-bench", swiftSettings: swiftSettings),
        .executableTarget(
            name: "parley-audio-bench",
            dependencies: [
                "ParleyAudio", "ParleyCore", "ParleyProtocol", "ParleyTestSupport", "Opus", "PulseAudio", "SpeexDSP",
            ],
            path: "Tools/parley-audio-bench", swiftSettings: swiftSettings),
        .executableTarget(
            name: "parley-bench-crypto", dependencies: ["ParleyProtocol", "Sodium"], path: "Tools/parley-bench-crypto",
            swiftSettings: swiftSettings),
        // Fuzzing: libFuzzer entry (built by Scripts/fuzz) and, in a plain build, a seed/replay tool.
        .executableTarget(
            name: "parley-fuzz", dependencies: ["ParleyProtocol", "ParleyCore", "RendezvousWire", "MeetingCore"],
            path: "Tools/parley-fuzz", swiftSettings: swiftSettings),

        // MARK: Tests.
        .testTarget(name: "SodiumTests", dependencies: ["Sodium", "ParleyTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "OpusTests", dependencies: ["Opus", "OggOpus", "ParleyCore", "ParleyTestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ICETests",
            dependencies: ["ICE", "ICETestSupport", "ParleyCore", "ParleyTestSupport", "RendezvousWire"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ParleyProtocolTests", dependencies: ["ParleyProtocol", "Sodium", "ParleyCore", "ParleyTestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(name: "ControlAPITests", dependencies: ["ControlAPI"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ParleyNodeTests",
            dependencies: [
                "ParleyNode", "ControlAPI", "ParleyTestSupport",
                "ParleyCore", "ParleyProtocol", "ICE", "RendezvousWire", "ParleyAudio",
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ParleyCoreTests", dependencies: ["ParleyCore", "ParleyTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "MeetingCoreTests",
            dependencies: [
                "MeetingCore", "MeetingSimulation", "ControlAPI", "ParleyCore", "ParleyProtocol", "RendezvousWire",
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ParleyIntegrationTests",
            dependencies: [
                "NodeLab", "ControlAPI", "ParleyTestSupport", "ParleyProtocol", "RendezvousClient", "Sodium",
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ParleyAudioTests",
            dependencies: [
                "ParleyAudio", "ParleyCore", "ParleyProtocol", "Opus", "PulseAudio", "SpeexDSP", "ParleyTestSupport",
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "RendezvousWireTests", dependencies: ["RendezvousWire", "ParleyCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "RendezvousServerTests",
            dependencies: [
                "RendezvousServer", "RendezvousClient", "RendezvousWire", "ParleyProtocol", "Sodium",
                "ParleyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
