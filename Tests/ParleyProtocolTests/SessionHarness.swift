import ParleyCore
import Sodium
import Synchronization

@testable import ParleyProtocol

/// A wall clock tests step by hand.
final class ManualWallClock: Sendable {
    private let nanoseconds: Mutex<UInt64>

    init(_ start: UInt64 = 1_700_000_000_000_000_000) {
        nanoseconds = Mutex(start)
    }

    func advance(by duration: Duration) {
        let (seconds, attoseconds) = duration.components
        nanoseconds.withLock { $0 += UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000) }
    }

    var clock: WallClock { WallClock { [self] in nanoseconds.withLock { $0 } } }
}

/// Two peers' sessions joined by a simulated path, with one injected clock: what one side sends
/// is queued for the other, and `run` delivers until both queues are empty. `filter` can drop
/// datagrams (loss, an attacker) and every output is recorded for the test to inspect.
struct SessionPair {
    enum Side: Hashable { case a, b }

    let nodeA: NodeIdentity
    let nodeB: NodeIdentity
    var a: PeerSession
    var b: PeerSession
    let wall = ManualWallClock()
    var now = Instant.now
    var inFlight: [(to: Side, datagram: [UInt8])] = []
    var events: [Side: [PeerSessionEvent]] = [.a: [], .b: []]
    var payloads: [Side: [InnerPayload]] = [.a: [], .b: []]
    var drops: [Side: [PeerSessionDrop]] = [.a: [], .b: []]
    /// Every datagram put on the path, by its sender.
    var sent: [Side: [[UInt8]]] = [.a: [], .b: []]
    /// Return false to lose a datagram on its way to `to`.
    var filter: (_ to: Side, _ datagram: [UInt8]) -> Bool = { _, _ in true }

    /// `a` is the preferred initiator (its identity key sorts first) unless `swapRoles`.
    init(keysA: RoomKeys, keysB: RoomKeys? = nil, swapRoles: Bool = false) {
        var nodes = [NodeIdentity.generate(), NodeIdentity.generate()].sorted {
            $0.publicKey.lexicographicallyPrecedes($1.publicKey)
        }
        if swapRoles { nodes.reverse() }
        nodeA = nodes[0]
        nodeB = nodes[1]
        let clock = wall.clock
        a = PeerSession(local: nodeA, peer: nodeB.peerIdentity, keys: keysA, wallClock: clock)
        b = PeerSession(local: nodeB, peer: nodeA.peerIdentity, keys: keysB ?? keysA, wallClock: clock)
    }

    static func sameRoom() throws -> SessionPair {
        SessionPair(keysA: try RoomKeys(roomSecret: .random(count: 32)))
    }

    mutating func absorb(_ output: PeerSessionOutput, from side: Side) {
        let other: Side = side == .a ? .b : .a
        for datagram in output.datagrams {
            sent[side, default: []].append(datagram)
            inFlight.append((other, datagram))
        }
        events[side, default: []] += output.events
        if let payload = output.payload { payloads[side, default: []].append(payload) }
        if let drop = output.dropped { drops[side, default: []].append(drop) }
    }

    /// Delivers queued datagrams (and what they provoke) until nothing is in flight.
    mutating func run() {
        while !inFlight.isEmpty {
            let (to, datagram) = inFlight.removeFirst()
            guard filter(to, datagram) else { continue }
            deliver(datagram, to: to)
        }
    }

    mutating func deliver(_ datagram: [UInt8], to side: Side) {
        if side == .a {
            absorb(a.receive(datagram, now: now), from: .a)
        } else {
            absorb(b.receive(datagram, now: now), from: .b)
        }
    }

    mutating func start() {
        absorb(a.start(now: now), from: .a)
        absorb(b.start(now: now), from: .b)
        run()
    }

    /// Moves both clocks forward, runs both timers, and delivers what they send.
    mutating func advance(by duration: Duration) {
        now += duration
        wall.advance(by: duration)
        absorb(a.tick(now: now), from: .a)
        absorb(b.tick(now: now), from: .b)
        run()
    }

    /// Seals a payload on one side and puts it on the path (not yet delivered).
    @discardableResult
    mutating func send(_ body: [UInt8], from side: Side, type: InnerPacketType = .media) -> Bool {
        var packet: [UInt8] = []
        let sealed =
            side == .a
            ? a.seal(type, body: body, now: now, into: &packet) : b.seal(type, body: body, now: now, into: &packet)
        if sealed {
            sent[side, default: []].append(packet)
            inFlight.append((side == .a ? .b : .a, packet))
        }
        return sealed
    }

    mutating func clearRecords() {
        events = [.a: [], .b: []]
        payloads = [.a: [], .b: []]
        drops = [.a: [], .b: []]
        sent = [.a: [], .b: []]
    }
}
