import ControlAPI
import MeetingCore
import ParleyCore
import ParleyProtocol
import RendezvousWire
import Synchronization

extension MeetingSimulation {
    enum Phase: Equatable {
        case idle, running, frozen, crashed, ended
    }

    /// One simulated daemon: its core and what its driver would hold (the data path of each link).
    final class Node {
        let id: NodeID
        let name: String
        let identity: NodeIdentity
        let options: NodeOptions
        var core: MeetingCore
        var phase = Phase.idle
        var failure: String?
        private(set) var paths: [LinkID: Path] = [:]
        /// The link toward each peer (by identity key).
        private var pathsByPeer: [[UInt8]: LinkID] = [:]

        func add(_ path: Path, as link: LinkID) {
            paths[link] = path
            pathsByPeer[path.peerKey] = link
        }

        func removePath(_ link: LinkID) {
            guard let path = paths.removeValue(forKey: link) else { return }
            if pathsByPeer[path.peerKey] == link { pathsByPeer[path.peerKey] = nil }
            fanOutVerifiers.keep(path.link.fanOutVerifier)
        }

        func removeAllPaths() {
            paths = [:]
            pathsByPeer = [:]
        }
        /// The node's public address; a new one means a renumbered NAT or another network.
        var addressGeneration = 0
        var everAdmitted = false
        /// Told to join (it may not have started yet).
        var expected = false
        var joined = false
        var talking: Bool
        var muted: Bool
        var paused = false
        var encoderLoss = 0.0
        var copyOrder = CopyOrder()
        /// The latest `.setSendRate` (nil: no limit).
        var sendRate: Int?
        /// The latest `.setFanOut` (§15), and what signs our frames for it.
        var fanOut: FanOutRoute?
        var signer: FanOutSigner?
        /// Media sequence numbers, one counter for every link (§9.1).
        var nextSequence: UInt32 = 0
        /// What this node carries for others (§13.3).
        var relayTable = RelayTable()
        /// The fan-out replay windows of ended links (§15.2).
        var fanOutVerifiers = FanOutVerifiers()
        var events: [ControlEvent] = []
        /// Commands by kind, for scenario checks.
        var commandCounts: [String: Int] = [:]
        var logs: [MeetingLog] = []
        /// What reached the node while it was frozen, handled when it goes on.
        var inbox: [Event] = []
        var scheduledWake: Instant?
        /// `.stillAuthenticated` facts held until the core's next input, as the daemon holds them.
        var heldLiveness: [LinkID: MeetingInput] = [:]
        /// Inputs handed to the core on their own (held ones not counted): the daemon's wake-ups.
        var ownInputs = 0
        var lastWake: Instant?
        var wakesAtOneInstant = 0
        /// When media from each peer (by identity key) arrived.
        var mediaArrivals: [[UInt8]: [Instant]] = [:]

        init(id: NodeID, name: String, identity: NodeIdentity, core: MeetingCore, options: NodeOptions) {
            self.id = id
            self.name = name
            self.identity = identity
            self.core = core
            self.options = options
            talking = options.talking
            muted = options.muted
        }

        func path(toward key: [UInt8]) -> Path? {
            pathsByPeer[key].flatMap { paths[$0] }
        }

        func pathID(toward key: [UInt8]) -> LinkID? { pathsByPeer[key] }
    }

    /// A link's data path in a simulated driver: the real session, a modelled ICE stream. A
    /// class, so the driver's many reads and writes do not copy the session.
    final class Path {
        let peerKey: [UInt8]
        var link: LinkSession
        var meter = LinkMeter()
        /// Restarts carried out so far (the agent's generation).
        var generation = 0
        var localCredentials: PathCredentials
        var remoteCredentials: PathCredentials?
        /// The peer addresses its candidates named (address generations).
        var remoteAddresses: Set<Int> = []
        var remoteDone = false
        var connection: Connection?
        /// The link of the member this path's datagrams go through (§13), nil: the direct path.
        var relayVia: LinkID?
        var connectedGeneration: Int?
        var failScheduled = false
        /// Session datagrams that could not be sent before the path was up.
        var held: [[UInt8]] = []
        var firstSequence: UInt32?
        var highestSequence: UInt32 = 0
        var mediaReceived = 0
        /// The sequence numbers received lately (a frame that arrives twice counts once).
        var recentSequences: Set<UInt32> = []
        var lastMediaAt: Instant?
        var bytesSent: UInt64 = 0
        var bytesReceived: UInt64 = 0
        /// The queueing delay of the peer's media, as a receiver measures it (§10.1).
        var queueDelay = QueueDelayEstimate(ticksPerSecond: 1_000_000_000)

        init(peerKey: [UInt8], link: LinkSession, localCredentials: PathCredentials) {
            self.peerKey = peerKey
            self.link = link
            self.localCredentials = localCredentials
        }

        var counts: LinkMeter.Counts {
            let expected = firstSequence.map { Int(highestSequence &- $0) + 1 } ?? 0
            return LinkMeter.Counts(
                expected: expected, received: mediaReceived, bytesSent: bytesSent, bytesReceived: bytesReceived)
        }
    }

    /// A working ICE pair: datagrams pass while both ends keep the addresses it was made with.
    struct Connection {
        let peer: NodeID
        let localAddress: Int
        let peerAddress: Int
        let relayed: Bool
    }
}

/// The simulation's wall clock (handshake timestamps, §7.4), following virtual time.
final class VirtualWallClock: Sendable {
    private let nanoseconds = Atomic<UInt64>(1_800_000_000_000_000_000)

    func advance(to value: UInt64) { nanoseconds.store(value, ordering: .relaxed) }
    var clock: WallClock {
        WallClock { [self] in nanoseconds.load(ordering: .relaxed) }
    }
}
