import ArgumentParser
import ControlAPI
import Logging
import NIOPosix
import ParleyAudio
import ParleyCommandLine
import ParleyCore
import ParleyNode
import ParleyProtocol
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

@main
struct Parleyd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parleyd",
        abstract: "The Parley node daemon: one end-to-end encrypted, peer-to-peer audio meeting.",
        discussion: """
            Control it with `parley` (status, join, leave, mute, verify, watch). With --host it also runs \
            the meeting's rendezvous and prints the invite as the first line on standard output. \
            SIGTERM or SIGINT leave the meeting gracefully (peers are told at once) and exit.
            """,
        version: ParleyVersion.string
    )

    @Option(help: "The control socket (mode 0600; a stale socket is replaced).")
    var socket: String = ControlSocketPath.defaultPath
    @Option(help: "Where the identity and pinned keys live (default: $XDG_STATE_HOME/parley or ~/.local/state/parley).")
    var stateDir: String?
    @Option(help: "Your name in meetings (default: USER@HOSTNAME).")
    var name: String?
    @Option(help: "Join this meeting at start (an invite string, parley1:…).")
    var join: String?
    @Flag(help: "Start a meeting with a rendezvous embedded in this daemon; prints its invite.")
    var host = false
    @Option(help: "With --host: where the embedded rendezvous listens (HOST:PORT; port 0 picks one).")
    var listen: String = "0.0.0.0:7777"
    @Option(help: "With --host: the host name or address peers reach the rendezvous at (see the README).")
    var advertise: String?
    @Flag(
        inversion: .prefixedNo,
        help: "With --host: serve wss:// with a self-signed certificate the invite pins (--no-tls: plain ws://).")
    var tls = true
    @Option(help: "Microphone: pulse[:SOURCE], wav:PATH, tone:HZ or silence (default: pulse).")
    var audioIn: String?
    @Option(help: "Speaker: pulse[:SINK], wav:PATH or null (default: pulse).")
    var audioOut: String?
    // Numbers parse unconditionally, so `--bitrate -5` is refused for its value (AudioSetup), not
    // taken for a flag.
    @Option(parsing: .unconditional, help: "Audio frame duration in milliseconds: 10, 20 or 40.")
    var frameMs = 20
    @Option(parsing: .unconditional, help: "Opus bitrate in bits per second, 6000 to 510000.")
    var bitrate = 32_000
    @Option(parsing: .unconditional, help: "Opus encoder complexity, 0 (cheapest) to 10 (best quality per bit).")
    var complexity = AudioSender.defaultComplexity
    @Flag(
        inversion: .prefixedNo,
        help:
            "Discontinuous transmission: send nothing while your microphone is silent or muted (saves your peers' bandwidth and CPU)."
    )
    var dtx = true
    @Flag(
        help:
            "Send at --bitrate and --frame-ms whatever the peers report (default: lower the bitrate and lengthen packets to fit the uplink)."
    )
    var fixedRate = false
    @Option(help: "STUN server HOST:PORT (default: the rendezvous' own, if it offers one).")
    var stun: String?
    @Option(help: "TURN server URL, e.g. turn:relay.example.org:3478?transport=udp (default: the rendezvous').")
    var turn: String?
    @Option(help: "User name for --turn.")
    var turnUser: String?
    @Option(help: "Password for --turn (visible in ps; prefer the rendezvous' short-lived credentials).")
    var turnPass: String?
    @Option(help: "Verify turns: (TLS) servers against the PEM certificates in this file instead of the system's CAs.")
    var turnCa: String?
    @Flag(help: "Send everything through TURN: peers never learn this node's addresses (and it relays for nobody).")
    var relayOnly = false
    @Option(
        help:
            "Carry the audio of at most this many pairs of other members whose direct path failed (0: never; status shows whom)."
    )
    var relayPairs = 4
    @Flag(
        inversion: .prefixedNo,
        help:
            "When your uplink cannot carry a copy of your voice per peer, send one signed copy through a member that passes it on (--no-fan-out: never; then no member can prove what you said)."
    )
    var fanOut = true
    @Option(help: "Use only this local address for ICE host candidates (repeatable).")
    var localAddress: [String] = []
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        if host && join != nil { throw ValidationError("give --host or --join, not both") }
        guard NodeConfiguration.relayPairsRange.contains(relayPairs) else {
            throw ValidationError("--relay-pairs must be 0 to 64, got \(relayPairs)")
        }
        if let join {
            do { _ = try Invite(parsing: join) } catch { throw ValidationError("invalid invite: \(error)") }
        }
        if (turn == nil) != (turnUser == nil) || (turn == nil) != (turnPass == nil) {
            throw ValidationError("--turn, --turn-user and --turn-pass go together")
        }
        if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("unknown --log-level \(logLevel)") }
        do {
            try iceSettings().validate()
            try hostSettings().validate()
        } catch { throw ValidationError(error.description) }
    }

    /// The ICE flags (`--stun`, `--turn…`, `--relay-only`, `--local-address`).
    func iceSettings() -> ICESettings {
        var ice = ICESettings()
        ice.stun = stun
        if let turn, let turnUser, let turnPass {
            ice.turn = .init(url: turn, username: turnUser, password: turnPass)
        }
        ice.relayOnly = relayOnly
        ice.localAddresses = localAddress
        ice.turnCA = turnCa
        return ice
    }

    /// The `--host` flags (`--listen`, `--advertise`, `--no-tls`).
    func hostSettings() -> HostedRendezvous.Settings {
        HostedRendezvous.Settings(listen: listen, advertise: advertise, tls: tls)
    }

    /// Every error is one clear line on stderr and a non-zero exit (`OneLineErrors`).
    static func main() async {
        await mainWithOneLineErrors()
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "parleyd")

        let audio = try AudioSetup.choose(
            input: audioIn, output: audioOut, frameMilliseconds: frameMs, bitrate: bitrate, complexity: complexity,
            dtx: dtx, fixedRate: fixedRate)
        if let warning = audio.warning { StandardStreams.printError("parleyd: \(warning)") }
        let ice = iceSettings()
        let configuration = NodeConfiguration(
            stateDirectory: stateDir ?? Self.defaultStateDirectory(), displayName: name ?? Self.defaultName(),
            audio: audio.configuration, ice: ice, relayPairs: relayPairs, fanOut: fanOut)
        let daemon = try NodeDaemon(configuration: configuration, logger: logger)

        let control = try await ControlServer(
            path: socket, handler: daemon, group: MultiThreadedEventLoopGroup.singleton, logger: logger
        ).bind()
        var services: [any Service] = []
        var invite = join
        if host {
            let (server, minted) = try await HostedRendezvous.start(
                hostSettings(), ice: ice, stateDirectory: configuration.stateDirectory,
                logger: Logger(label: "parley.rendezvous"))
            services.append(server)  // first in, last out: BYE still goes through it on shutdown
            invite = minted.string
            // The invite is the product of --host: printed (never logged) as the first stdout line.
            print(minted.string)
            StandardStreams.flushOutput()
            StandardStreams.printError(
                "parleyd: hosting a meeting at \(minted.rendezvous); share the invite above with the participants")
        }
        services.append(ControlService(bound: control))
        services.append(NodeService(daemon: daemon, initialInvite: invite))
        StandardStreams.printError("parleyd: \(configuration.displayName) (\(daemon.shortID)) ready on \(socket)")
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    static func defaultStateDirectory() -> String {
        if let state = getenv("XDG_STATE_HOME").map({ String(cString: $0) }), !state.isEmpty {
            return state + "/parley"
        }
        let home = getenv("HOME").map { String(cString: $0) } ?? "/tmp"
        return home + "/.local/state/parley"
    }

    static func defaultName() -> String {
        let user = getenv("USER").map { String(cString: $0) } ?? "parley"
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        let length = buffer.firstIndex(of: 0) ?? buffer.count
        let hostname = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let name = hostname.isEmpty ? user : "\(user)@\(hostname)"
        return String(name.prefix(64))
    }
}

/// The bound control socket as a service (bound before the group starts, so "another parleyd is
/// running" is reported before anything else happens).
struct ControlService: Service {
    let bound: BoundControlServer
    func run() async throws { try await bound.serve() }
}
