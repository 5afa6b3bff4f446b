public import ControlAPI
public import MeetingCore
public import ParleyCore
import ParleyProtocol
import RendezvousWire
import Sodium

/// A whole meeting in one process on a virtual clock: N `MeetingCore`s wired through a simulated
/// rendezvous and simulated network paths, each core driven the way the daemon's driver drives
/// it. Sessions are real (`LinkSession`: Noise handshakes, sealed REPORTs and media) over
/// simulated paths with latency, loss, partitions, address changes and NATs; ICE is a model
/// (credentials and candidates exchanged through real envelopes, a check that succeeds when the
/// two ends know each other and the network lets them through). Everything random comes from
/// the seed, so a failing scenario replays exactly.
///
///     let sim = MeetingSimulation(seed: 7)
///     let alice = sim.addNode("alice"), bob = sim.addNode("bob")
///     sim.joinAll()
///     #expect(sim.run(until: .seconds(5)) { sim.allLinksUp() })
public final class MeetingSimulation {
    public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
        public let index: Int
        public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.index < rhs.index }
        public var description: String { "node\(index)" }
    }

    /// How a node reaches the network.
    public enum NAT: Sendable, Hashable {
        /// A public address, or a NAT any peer can punch through.
        case open
        /// A symmetric NAT: no direct path to another symmetric NAT.
        case symmetric
    }

    public struct NodeOptions: Sendable {
        /// Sends media all the time; otherwise DTX keeps it silent (REPORTs only).
        public var talking = true
        public var nat = NAT.open
        /// Has a TURN relay: reaches anyone the network lets it reach, whatever the NATs.
        public var turn = false
        /// Joins with another room secret (a mistyped or forged invite).
        public var wrongSecret = false
        public var muted = false
        /// The bandwidth estimate's range (bits/s per peer with headers): 32 kb/s of Opus in 20 ms
        /// packets at the top, 6 kb/s in 60 ms packets at the bottom; nil: `--fixed-rate`.
        public var sendRateRange: ClosedRange<Int>? = 15_467...60_400
        /// The protocol versions its HELLO lists (PROTOCOL §12; nil: this build's).
        public var protocolVersions: [UInt8]?
        /// Whether it may send one copy up through a member (PROTOCOL §15; `parleyd --no-fan-out`).
        public var fanOut = true
        public init() {}
    }

    /// Knobs of the simulated world.
    public struct World: Sendable {
        /// One-way latency of a datagram between two nodes, and of a message to or from the
        /// rendezvous.
        public var latency: Duration = .milliseconds(10)
        public var rendezvousLatency: Duration = .milliseconds(15)
        /// How often a talking node sends a media packet to each peer (a real node sends one per
        /// 20 ms frame; fewer keep big simulations fast, and loss is measured all the same).
        public var mediaInterval: Duration = .milliseconds(100)
        /// ICE gives up on a pair this long after both sides sent all their candidates.
        public var iceFailAfter: Duration = .seconds(5)
        /// The rendezvous' room size.
        public var maxMembers = 16
        /// How long a frozen member's rendezvous connection survives (its pings stop).
        public var rendezvousIdleTimeout: Duration = .seconds(45)
        public var timing = MeetingTiming()
        public init() {}
    }

    public let start: Instant
    public private(set) var now: Instant
    public var world: World
    var queue = EventQueue<Event>()
    var random: SeededGenerator
    var nodes: [Node] = []
    let roomSecret: SecureBytes
    var rendezvous = Rendezvous()
    var network = Network()
    let wallClock = VirtualWallClock()
    /// What the simulation did so far, for sizing scenarios.
    public internal(set) var counters: [String: Int] = [:]

    public init(seed: UInt64 = 1, world: World = World()) {
        self.world = world
        random = SeededGenerator(seed: seed)
        start = Instant.now
        now = start
        roomSecret = Self.secureBytes(count: 32, using: &random)
    }

    /// Seconds since the simulation began.
    public var elapsed: Duration { now - start }

    // MARK: Building the meeting

    @discardableResult
    public func addNode(_ name: String, _ options: NodeOptions = NodeOptions()) -> NodeID {
        let id = NodeID(index: nodes.count)
        let identity = try! NodeIdentity(
            identitySeed: Self.secureBytes(count: 32, using: &random),
            staticSecret: Self.secureBytes(count: 32, using: &random))
        let keys = try! RoomKeys(
            roomSecret: options.wrongSecret ? Self.secureBytes(count: 32, using: &random) : roomSecret)
        var configuration =
            if let versions = options.protocolVersions {
                try! MeetingConfiguration(
                    identity: identity, keys: keys, displayName: name, sessionEpoch: random.next() | 1,
                    protocolVersions: versions, firstEnvelopeSequence: 1_000_000 + UInt64(nodes.count) << 32,
                    randomSeed: random.next())
            } else {
                try! MeetingConfiguration(
                    identity: identity, keys: keys, displayName: name, sessionEpoch: random.next() | 1,
                    firstEnvelopeSequence: 1_000_000 + UInt64(nodes.count) << 32, randomSeed: random.next())
            }
        configuration.timing = world.timing
        configuration.sendRateRange = options.sendRateRange
        configuration.fanOut = options.fanOut
        let core = MeetingCore(configuration: configuration, pins: IdentityPins(), muted: options.muted, now: now)
        nodes.append(Node(id: id, name: name, identity: identity, core: core, options: options))
        return id
    }

    /// The node starts its meeting now (or after `delay`): its core starts and it connects to
    /// the rendezvous.
    public func join(_ id: NodeID, after delay: Duration = .zero) {
        nodes[id.index].expected = true
        schedule(.join(id), after: delay)
    }

    public func joinAll(after delay: Duration = .zero) {
        for node in nodes where node.phase == .idle { join(node.id, after: delay) }
    }

    // MARK: Running

    /// Runs the simulation for `duration` of virtual time.
    public func run(for duration: Duration) {
        let end = now + duration
        while let next = queue.nextTime, next <= end {
            step()
        }
        now = max(now, end)
    }

    /// Runs until `condition` holds or `limit` passes; true if it held. The condition is checked
    /// every `checkEvery` of virtual time (after the events due by then), not after every event.
    @discardableResult
    public func run(
        until limit: Duration, checkEvery interval: Duration = .milliseconds(10), _ condition: () -> Bool
    ) -> Bool {
        let end = now + limit
        while true {
            if condition() { return true }
            guard now < end else { return false }
            let checkpoint = min(end, now + interval)
            while let next = queue.nextTime, next <= checkpoint { step() }
            now = checkpoint
        }
    }

    func step() {
        guard let (time, event) = queue.pop() else { return }
        counters["events", default: 0] += 1
        now = max(now, time)
        handle(event)
    }

    func schedule(_ event: Event, after delay: Duration = .zero) {
        queue.schedule(event, at: now + delay)
    }

    func schedule(_ event: Event, at time: Instant) {
        queue.schedule(event, at: max(time, now))
    }

    // MARK: What happens to nodes

    /// The node leaves the meeting (LEAVE and BYE, as `parley leave`).
    public func leave(_ id: NodeID) { schedule(.input(id, .leave)) }

    /// The node's process dies (SIGKILL): it says nothing; its rendezvous connection resets.
    public func crash(_ id: NodeID) { schedule(.crash(id)) }

    /// The node's process stops (SIGSTOP, a closed laptop lid) for `duration`, then goes on.
    public func freeze(_ id: NodeID, for duration: Duration) {
        schedule(.freeze(id))
        schedule(.thaw(id), after: duration)
    }

    public func setMuted(_ id: NodeID, _ muted: Bool) { schedule(.input(id, .setMuted(muted))) }

    /// The node starts or stops recording (its driver would once the file is open).
    public func setRecording(_ id: NodeID, _ recording: Bool) { schedule(.input(id, .setRecording(recording))) }

    /// Whether the node's microphone hears speech (DTX sends nothing while it does not).
    public func setTalking(_ id: NodeID, _ talking: Bool) { schedule(.talking(id, talking)) }

    /// Hands a node's core an input as its driver would (for facts the simulated network does
    /// not produce by itself, such as a race seen on real machines).
    public func inject(_ id: NodeID, _ input: MeetingInput) { schedule(.input(id, input)) }

    /// The node's identity key (what other members' messages name it by).
    public func identityKey(of id: NodeID) -> [UInt8] { nodes[id.index].identity.publicKey }

    /// Drops every datagram between two nodes (both still reach the rendezvous and others).
    public func partition(_ a: NodeID, _ b: NodeID) { network.blocked.insert(Network.Pair(a, b)) }
    public func heal(_ a: NodeID, _ b: NodeID) { network.blocked.remove(Network.Pair(a, b)) }

    /// Caps the node's uplink at `bitsPerSecond` with a FIFO of at most `queue` (nil: no cap).
    public func setUplink(of id: NodeID, bitsPerSecond: Int?, queue: Duration = .milliseconds(200)) {
        network.uplinks[id] = bitsPerSecond.map { Uplink(bitsPerSecond: $0, queue: queue, freeAt: now) }
    }

    /// Caps what the node can receive (its downlink), with its ISP's queue in front of it (nil: no cap).
    public func setDownlink(of id: NodeID, bitsPerSecond: Int?, queue: Duration = .milliseconds(200)) {
        network.downlinks[id] = bitsPerSecond.map { Uplink(bitsPerSecond: $0, queue: queue, freeAt: now) }
    }

    /// How long the node's datagrams waited in its capped uplink since `since` (mean and
    /// largest), and how many it dropped in all.
    public func uplinkQueue(of id: NodeID, since: Duration) -> (mean: Duration, largest: Duration, dropped: Int)? {
        guard let uplink = network.uplinks[id] else { return nil }
        let waits = uplink.waits.filter { $0.at >= start + since }.map(\.wait)
        guard !waits.isEmpty else { return (.zero, .zero, uplink.dropped) }
        return (waits.reduce(.zero, +) / waits.count, waits.max()!, uplink.dropped)
    }

    /// The bits per second per peer the node's core last gave its encoder (nil: no limit).
    public func sendRate(of id: NodeID) -> Int? { nodes[id.index].sendRate }

    /// The member the node's frames go up to once (PROTOCOL §15), and how many peers it passes
    /// them to; nil: a copy to every peer.
    public func fanOut(of id: NodeID) -> (through: NodeID, covered: Int)? {
        let node = nodes[id.index]
        guard let route = node.fanOut, let key = node.paths[route.via]?.peerKey,
            let member = nodes.first(where: { $0.identity.publicKey == key })
        else { return nil }
        return (member.id, route.covered.count)
    }

    /// Random loss on datagrams from `a` to `b` (0...1).
    public func setLoss(from a: NodeID, to b: NodeID, _ loss: Double) { network.loss[[a, b]] = loss }

    /// The node's public address changes (its NAT renumbered, or it moved networks): paths
    /// through the old address stop carrying datagrams. `noticed`: the node's own interfaces
    /// changed (Wi-Fi to wired), which it learns from the kernel at once; a renumbered NAT it
    /// can only notice by the silence.
    public func changeAddress(_ id: NodeID, noticed: Bool = false) {
        nodes[id.index].addressGeneration += 1
        if noticed { schedule(.input(id, .localAddressesChanged)) }
    }

    /// The rendezvous goes away until `restoreRendezvous` (members keep retrying).
    public func stopRendezvous() { schedule(.rendezvousDown) }
    public func restoreRendezvous() { schedule(.rendezvousUp) }

    /// How many times the node asked its driver for `command` so far (e.g. "restartPath").
    public func count(_ command: String, at id: NodeID) -> Int { nodes[id.index].commandCounts[command, default: 0] }
    /// The inputs node `id`'s core was handed on their own so far: what wakes a daemon's meeting.
    public func ownInputs(at id: NodeID) -> Int { nodes[id.index].ownInputs }

    /// The rendezvous goes away for `downtime`: every connection drops; members reconnect once
    /// it is back. Audio between connected members does not need it.
    public func restartRendezvous(downtime: Duration) {
        schedule(.rendezvousDown)
        schedule(.rendezvousUp, after: downtime)
    }

    // MARK: Observing

    public func name(of id: NodeID) -> String { nodes[id.index].name }
    public var nodeIDs: [NodeID] { nodes.map(\.id) }

    /// The node's links by peer name, as `parley status` shows them.
    public func links(of id: NodeID) -> [String: MeetingCore.LinkView] {
        var result: [String: MeetingCore.LinkView] = [:]
        for link in nodes[id.index].core.links { result[link.name] = link }
        return result
    }

    public func linkStates(of id: NodeID) -> [String: LinkState] { links(of: id).mapValues(\.state) }

    /// Every `parley watch` event of the node so far.
    public func events(of id: NodeID) -> [ControlEvent] { nodes[id.index].events }

    public func logs(of id: NodeID) -> [MeetingLog] { nodes[id.index].logs }

    /// Why the node's meeting ended (nil while it runs or when it left), and whether it did.
    public func ending(of id: NodeID) -> (ended: Bool, failure: String?) {
        (nodes[id.index].phase == .ended, nodes[id.index].failure)
    }

    public func securityCode(of id: NodeID) -> String { nodes[id.index].core.securityCode }
    public func verification(of id: NodeID) -> Verification { nodes[id.index].core.verification() }

    /// The loss the node's encoder protects against now (§9.3).
    public func encoderLoss(of id: NodeID) -> Double { nodes[id.index].encoderLoss }

    /// Whether every pair among `ids` (if nil: every node told to join that has not crashed or
    /// ended) has its link up on both sides.
    public func allLinksUp(among ids: [NodeID]? = nil) -> Bool {
        let members = ids ?? nodes.filter { $0.expected && $0.phase != .crashed && $0.phase != .ended }.map(\.id)
        guard members.count >= 2 else { return false }
        for a in members {
            let states = linkStates(of: a)
            for b in members where b != a {
                guard states[name(of: b)] == .up else { return false }
            }
        }
        return true
    }

    /// Whether `listener` received media from `speaker` within the last `window`.
    public func hears(_ listener: NodeID, _ speaker: NodeID, within window: Duration = .milliseconds(500)) -> Bool {
        guard let path = nodes[listener.index].path(toward: nodes[speaker.index].identity.publicKey),
            let last = path.lastMediaAt
        else { return false }
        return now - last <= window
    }

    /// The longest time `listener` went without media from `speaker` since `since` (audio gap),
    /// measured at media packet arrivals.
    public func longestGap(_ listener: NodeID, _ speaker: NodeID, since: Instant) -> Duration {
        let key = nodes[speaker.index].identity.publicKey
        let arrivals = nodes[listener.index].mediaArrivals[key, default: []].filter { $0 >= since }
        var previous = since
        var longest = Duration.zero
        for arrival in arrivals + [now] {
            longest = max(longest, arrival - previous)
            previous = arrival
        }
        return longest
    }

    // MARK: Helpers

    static func secureBytes(count: Int, using random: inout SeededGenerator) -> SecureBytes {
        let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
        return SecureBytes(copying: bytes)
    }
}

// MARK: - The world's parts

extension MeetingSimulation {
    enum Event {
        case join(NodeID)
        case input(NodeID, MeetingInput)
        case wake(NodeID)
        case datagram(to: NodeID, from: NodeID, senderAddress: Int, bytes: [UInt8])
        case deliver(to: NodeID, from: RendezvousMemberID, payload: [UInt8], connection: Int)
        case admit(NodeID)
        case memberLeft(NodeID, connection: Int)
        case iceCheck(NodeID, LinkID, generation: Int)
        case iceFail(NodeID, LinkID, generation: Int)
        case pathEvent(NodeID, LinkID, generation: Int, PathFact)
        case media(NodeID)
        case talking(NodeID, Bool)
        case crash(NodeID)
        case freeze(NodeID)
        case thaw(NodeID)
        case rendezvousDown
        case rendezvousUp
    }

    /// The network between nodes.
    struct Network {
        struct Pair: Hashable {
            let low: NodeID
            let high: NodeID
            init(_ a: NodeID, _ b: NodeID) {
                low = min(a, b)
                high = max(a, b)
            }
        }
        var blocked: Set<Pair> = []
        /// Loss from the first node to the second.
        var loss: [[NodeID]: Double] = [:]
        /// Nodes whose uplink takes only so many bits per second, with a FIFO of at most `queue`
        /// (a home router's buffer): what it sends waits its turn, and is dropped when the
        /// queue is full.
        var uplinks: [NodeID: Uplink] = [:]
        /// Nodes whose downlink takes only so many bits per second (the same model, at the
        /// receiving end: what arrives waits behind what arrived before it).
        var downlinks: [NodeID: Uplink] = [:]
    }

    struct Uplink {
        let bitsPerSecond: Int
        let queue: Duration
        /// When the datagrams queued so far will all have left.
        var freeAt: Instant
        /// Queueing delay of each datagram sent and how many were dropped, for scenario checks.
        var waits: [(at: Instant, wait: Duration)] = []
        var dropped = 0
    }

    /// The rendezvous server: rooms by room id, member ids per connection.
    struct Rendezvous {
        var up = true
        var nextMember: UInt32 = 1
        /// Each connected node's member id and room, by node.
        var members: [NodeID: (member: RendezvousMemberID, room: [UInt8], connection: Int)] = [:]
        var nextConnection = 1

        func room(_ room: [UInt8]) -> [(NodeID, RendezvousMemberID)] {
            members.filter { $0.value.room == room }.map { ($0.key, $0.value.member) }.sorted { $0.0 < $1.0 }
        }
    }
}
