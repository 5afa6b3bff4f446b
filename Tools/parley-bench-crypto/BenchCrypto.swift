import ParleyCore
import ParleyProtocol
import Sodium

#if canImport(Glibc)
import Glibc
#endif

/// Prints what Parley's cryptography costs on this machine (Scripts/bench-crypto builds it in
/// release mode and runs it). Numbers are printed, never asserted.
@main
enum BenchCrypto {
    static func main() throws {
        print("Parley crypto benchmark (libsodium \(Sodium.versionString), one thread)")
        try transport()
        try handshake()
        try initiationFlood()
        try envelopes()
        securityCode()
    }

    /// Runs `body` `count` times and returns the mean time per run in nanoseconds.
    static func measure(_ count: Int, _ body: () throws -> Void) rethrows -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<count { try body() }
        let elapsed = clock.now - start
        let (seconds, attoseconds) = elapsed.components
        return (Double(seconds) * 1e9 + Double(attoseconds) / 1e9) / Double(count)
    }

    static func report(_ name: String, _ nanoseconds: Double, _ note: String = "") {
        let value = nanoseconds >= 10_000 ? "\(Int(nanoseconds / 1000)) µs" : "\(Int(nanoseconds)) ns"
        print("  \(name.padding(46)) \(value.padding(10, left: true))  \(note)")
    }

    /// A session pair after a completed handshake.
    static func establishedPair() throws -> (PeerSession, PeerSession) {
        let keys = try RoomKeys(roomSecret: .random(count: 32))
        let nodes = [NodeIdentity.generate(), NodeIdentity.generate()].sorted {
            $0.publicKey.lexicographicallyPrecedes($1.publicKey)
        }
        var a = PeerSession(local: nodes[0], peer: nodes[1].peerIdentity, keys: keys)
        var b = PeerSession(local: nodes[1], peer: nodes[0].peerIdentity, keys: keys)
        let now = Instant.now
        var toB = a.start(now: now).datagrams
        var toA: [[UInt8]] = []
        while !toA.isEmpty || !toB.isEmpty {
            for datagram in toB { toA += b.receive(datagram, now: now).datagrams }
            toB = []
            for datagram in toA { toB += a.receive(datagram, now: now).datagrams }
            toA = []
        }
        precondition(a.isEstablished && b.isEstablished)
        return (a, b)
    }

    static func transport() throws {
        print("Transport (§8), 100-byte payload (an Opus frame), 1 + 16 + 16 bytes overhead:")
        var (a, b) = try establishedPair()
        let payload = RandomBytes.bytes(count: 100)
        var packet: [UInt8] = []
        packet.reserveCapacity(256)
        let now = Instant.now
        let count = 200_000
        let seal = measure(count) { _ = a.seal(.media, body: payload, now: now, into: &packet) }
        report("seal (PeerSession.seal into a reused buffer)", seal)
        var received = 0
        let sealOpen = measure(count) {
            _ = a.seal(.media, body: payload, now: now, into: &packet)
            if b.receive(packet, now: now).payload != nil { received += 1 }
        }
        precondition(received == count)
        report("seal + open (PeerSession.receive)", sealOpen, "per packet, both ends")
        let key = SecureBytes.random(count: 32)
        var buffer = [UInt8](repeating: 0, count: 16 + 101 + 16)
        let nonce = [UInt8](repeating: 0, count: 12)
        let raw = try nonce.withUnsafeBytes { nonce in
            try measure(count) {
                try buffer.withUnsafeMutableBytes { buffer in
                    try ChaCha20Poly1305.sealInPlace(buffer, associatedDataLength: 16, nonce: nonce, key: key)
                }
            }
        }
        report("raw ChaCha20-Poly1305 seal, 101 bytes (floor)", raw)
        let perPeerLoad = sealOpen * 50 / 1e9 * 100
        print(
            "  → at 50 packets/s, sealing and opening one peer's audio costs \(String(format2: perPeerLoad))% of a core"
        )
    }

    static func handshake() throws {
        print("Handshake (§7, Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b, 4 + 1 X25519 per side):")
        let count = 2_000
        let full = try measure(count) { _ = try establishedPair() }
        report("full handshake incl. identities (both sides)", full, "2 identity + 2 static keygens included")
        let keys = try RoomKeys(roomSecret: .random(count: 32))
        let nodes = [NodeIdentity.generate(), NodeIdentity.generate()].sorted {
            $0.publicKey.lexicographicallyPrecedes($1.publicKey)
        }
        let now = Instant.now
        var initiation: [UInt8] = []
        var response: [UInt8] = []
        let initiate = measure(count) {
            var a = PeerSession(local: nodes[0], peer: nodes[1].peerIdentity, keys: keys)
            initiation = a.start(now: now).datagrams[0]
        }
        report("initiator: create initiation", initiate)
        let respond = measure(count) {
            var b = PeerSession(local: nodes[1], peer: nodes[0].peerIdentity, keys: keys)
            response = b.receive(initiation, now: now).datagrams[0]
        }
        report("responder: check initiation, create response", respond)
        var a = PeerSession(local: nodes[0], peer: nodes[1].peerIdentity, keys: keys)
        let first = a.start(now: now).datagrams[0]
        var b = PeerSession(local: nodes[1], peer: nodes[0].peerIdentity, keys: keys)
        response = b.receive(first, now: now).datagrams[0]
        let finish = measure(count) {
            var copy = a
            precondition(copy.receive(response, now: now).events == [.established])
        }
        report("initiator: check response, derive keys", finish)
        var bogus = initiation
        bogus[20] ^= 1
        let reject = measure(count * 10) {
            var copy = b
            _ = copy.receive(bogus, now: now)
        }
        report("reject a forged initiation by mac1 (no DH)", reject)
        let dh = X25519.KeyPair.generate()
        let other = X25519.KeyPair.generate().publicKey
        report("X25519 (one DH)", try measure(count) { _ = try dh.sharedSecret(with: other) })
    }

    /// The flood of issue 15 (finding 6): initiations replayed at ~1900/s to one peer's session,
    /// 3000 of them. Arrival times are the flood's (on the session's injected clock); what is
    /// measured is the CPU the responder spends on them. A replayed initiation that reaches the
    /// Diffie-Hellman step is dropped only there, for its old timestamp.
    static func initiationFlood() throws {
        print("Handshake flood (§7.3): 3000 initiations at 1900/s to one session, responder's CPU:")
        let keys = try RoomKeys(roomSecret: .random(count: 32))
        let nodes = [NodeIdentity.generate(), NodeIdentity.generate()].sorted {
            $0.publicKey.lexicographicallyPrecedes($1.publicKey)
        }
        let start = Instant.now
        var initiator = PeerSession(local: nodes[0], peer: nodes[1].peerIdentity, keys: keys)
        // What an eavesdropper on the path collects over time: the peer's successive initiations.
        var captured: [[UInt8]] = []
        for _ in 0...3000 {
            initiator.close()
            captured.append(initiator.start(now: start).datagrams[0])
        }
        let count = 3000
        let spacing = Duration.seconds(1) / 1900
        func flood(_ name: String, _ packets: [[UInt8]]) {
            var responder = PeerSession(local: nodes[1], peer: nodes[0].peerIdentity, keys: keys)
            precondition(responder.receive(captured[count], now: start).datagrams.count == 1)  // the genuine one
            var reachedDH = 0
            let cpu = threadCPUNanoseconds {
                for (index, packet) in packets.enumerated() {
                    let output = responder.receive(packet, now: start + spacing * (index + 1))
                    if output.dropped == .handshake(.replayedTimestamp) { reachedDH += 1 }
                    precondition(output.datagrams.isEmpty)
                }
            }
            let milliseconds = String(format2: cpu / 1e6)
            print(
                "  \(name.padding(46)) \((milliseconds + " ms").padding(10, left: true))  CPU in all "
                    + "(\(Int(cpu) / count) ns each); \(reachedDH) reached Diffie-Hellman")
        }
        flood("3000 copies of the initiation it accepted", Array(repeating: captured[count], count: count))
        flood("3000 older initiations, each once", Array(captured[0..<count]))
    }

    /// The CPU time this thread spends in `body`, in nanoseconds.
    static func threadCPUNanoseconds(_ body: () -> Void) -> Double {
        func now() -> Double {
            var time = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
            return Double(time.tv_sec) * 1e9 + Double(time.tv_nsec)
        }
        let before = now()
        body()
        return now() - before
    }

    static func envelopes() throws {
        print("Signaling envelopes (§6):")
        let keys = try RoomKeys(roomSecret: .random(count: 32))
        let alice = NodeIdentity.generate()
        let bob = NodeIdentity.generate()
        let candidate = SignalingMessage.iceCandidate(
            generation: 0, candidate: "candidate:1 1 UDP 2130706431 192.0.2.10 54321 typ host")
        var sequencer = EnvelopeSequencer()
        var replayGuard = EnvelopeReplayGuard()
        let count = 5_000
        let sealed = try measure(count) {
            _ = try Envelope.seal(
                candidate, to: .peer(bob.peerIdentity), from: alice, sequence: sequencer.nextSequence(), keys: keys)
        }
        report("seal an ICE candidate (signed, sealed box)", sealed)
        let both = try measure(count) {
            let envelope = try Envelope.seal(
                candidate, to: .peer(bob.peerIdentity), from: alice, sequence: sequencer.nextSequence(), keys: keys)
            _ = try Envelope.open(envelope, as: bob, keys: keys, replayGuard: &replayGuard)
        }
        report("seal + open an ICE candidate", both)
    }

    /// Eight members agreeing on a code (§11.1) at once: every COMMIT and REVEAL each sends and
    /// checks, delivered in memory. What a node spends per view change.
    static func securityCode() {
        print("Meeting security code (§11.1), 8 members agreeing (commitments, reveals, the code):")
        let room = RandomBytes.bytes(count: 32)
        let members = (0..<8).map { CodeMember(identityKey: RandomBytes.bytes(count: 32), name: "member \($0)") }
        var code = ""
        let time = measure(20) {
            var nodes = members.map { SecurityCodeAgreement(roomID: room, me: $0) }
            var queue: [(to: [UInt8], from: [UInt8], message: SecurityCodeMessage)] = []
            for (index, member) in members.enumerated() {
                for out in nodes[index].viewChanged(peers: members.filter { $0 != member }) {
                    queue.append((out.peer, member.identityKey, out.message))
                }
            }
            while !queue.isEmpty {
                let (to, from, message) = queue.removeFirst()
                let index = members.firstIndex { $0.identityKey == to }!
                for out in nodes[index].received(message, from: from) { queue.append((out.peer, to, out.message)) }
            }
            code = nodes[0].code?.description ?? "none"
        }
        report("one member's share of an 8-member agreement", time / 8, "e.g. \(code)")
    }
}

extension String {
    func padding(_ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - count))
        return left ? fill + self : self + fill
    }

    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        self = "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
    }
}
