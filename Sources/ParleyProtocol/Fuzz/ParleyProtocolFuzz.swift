import ParleyCore
import Sodium

/// Fuzz entry points for the parsers that read bytes from the network or from users
/// (docs/DEVELOPING.md, "Fuzzing"). Each takes any bytes and must return without crashing;
/// where a property must hold (a parsed invite re-encodes to itself, an opened envelope re-seals
/// to the same message) it is checked with `precondition`, so a violation is a crash the fuzzer
/// reports. They live in the library so that `swift build` compiles them and tests can call them;
/// `Sources/parley-fuzz` wires them to libFuzzer.
public enum ParleyProtocolFuzz {
    // MARK: Invites (§2)

    public static func invite(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        if let invite = try? Invite(parsing: text) {
            let again = try? Invite(parsing: invite.string)
            precondition(again == invite, "a parsed invite does not survive formatting and parsing again")
        }
        // The field parser behind the checksum, reached directly.
        if let invite = try? Invite(binary: data + [0, 0, 0, 0]) {
            precondition((try? Invite(parsing: invite.string)) == invite, "a decoded binary invite does not round-trip")
        }
        _ = try? RendezvousURL(parsing: text)
        _ = try? TURNHint(uri: text)
    }

    public static func inviteSeeds() -> [[UInt8]] {
        let invites = [
            try! Invite(
                roomSecret: FuzzWorld.shared.roomSecret, rendezvous: RendezvousURL(parsing: "ws://192.0.2.1:7777")),
            try! Invite(
                roomSecret: FuzzWorld.shared.roomSecret, rendezvous: RendezvousURL(parsing: "wss://rv.example.org/p"),
                tlsPin: [UInt8](repeating: 7, count: 32),
                turnHints: [try! TURNHint(uri: "turn:[2001:db8::1]:3478?transport=udp", username: "u", password: "p")]),
        ]
        return invites.flatMap { invite in
            [
                Array(invite.string.utf8), Array("  \"\(invite.string.uppercased())\"\n".utf8),
                invite.encodedBytes().withUnsafeBytes { Array($0) },
            ]
        }
    }

    // MARK: Signaling envelopes (§6)

    public static func envelope(_ data: [UInt8]) {
        let world = FuzzWorld.shared
        var replayGuard = EnvelopeReplayGuard()
        _ = try? Envelope.open(data, as: world.bob, keys: world.keys, replayGuard: &replayGuard)
        _ = try? Envelope.Plaintext(parsing: data)
        // Past the encryption and the signature: the first byte as the type, the rest as the body
        // of a correctly sealed and signed envelope from Alice to Bob.
        guard let type = data.first else { return }
        var body = Array(data.dropFirst())
        if SignalingMessage.Kind(rawValue: type)?.isSealed == true {
            body = try! SealedBox.seal(world.alice.publicKey + body, to: world.bob.peerIdentity.staticKey)
        }
        guard body.count <= Envelope.maximumBodyLength else { return }
        let signature = world.alice.sign(
            Envelope.signedBytes(
                roomID: world.keys.roomID, kind: type, sender: world.alice.publicKey, recipient: world.bob.publicKey,
                sequence: 1, body: body))
        let plaintext = Envelope.Plaintext.encode(
            type: type, sender: world.alice.publicKey, recipient: world.bob.publicKey, sequence: 1,
            signature: signature,
            body: body)
        let envelope = Envelope.encrypt(plaintext, keys: world.keys, nonce: [UInt8](repeating: 0, count: 24))
        replayGuard = EnvelopeReplayGuard()
        guard let received = try? Envelope.open(envelope, as: world.bob, keys: world.keys, replayGuard: &replayGuard)
        else {
            return
        }
        let resealed = try? Envelope.seal(
            received.message, to: .peer(world.bob.peerIdentity), from: world.alice, sequence: 2, keys: world.keys)
        let reopened = resealed.flatMap {
            try? Envelope.open($0, as: world.bob, keys: world.keys, replayGuard: &replayGuard)
        }
        precondition(reopened?.message == received.message, "an opened message does not survive sealing again")
    }

    public static func envelopeSeeds() -> [[UInt8]] {
        let world = FuzzWorld.shared
        let messages: [SignalingMessage] = [
            .hello(try! Hello(identity: world.alice.peerIdentity, sessionEpoch: 7, displayName: "Alice")),
            .iceCredentials(
                try! ICECredentials(generation: 1, usernameFragment: "abcd", password: "0123456789012345678901")),
            .iceCandidate(generation: 1, candidate: "candidate:1 1 UDP 2130706431 192.0.2.1 5000 typ host"),
            .iceCandidatesDone(generation: 1), .iceRestart(generation: 2), .bye,
        ]
        var seeds: [[UInt8]] = []
        for (index, message) in messages.enumerated() {
            seeds.append(
                try! Envelope.seal(
                    message, to: .peer(world.bob.peerIdentity), from: world.alice, sequence: UInt64(index),
                    keys: world.keys))
            seeds.append([message.kind.rawValue] + message.encodedBody())
        }
        return seeds
    }

    // MARK: Packets on the ICE path (§7, §8)

    public static func transportPacket(_ data: [UInt8]) {
        let world = FuzzWorld.shared
        var session = world.responderSession
        _ = session.receive(data, now: world.now)
        _ = TransportHeader(packet: data)
        // Past the AEAD: the bytes as a plaintext (inner type and body) sealed with the keys the
        // session holds.
        if !data.isEmpty {
            var initiatorKeys = world.initiatorKeypair
            initiatorKeys.sendCounter = UInt64(data.count)
            var packet: [UInt8] = []
            initiatorKeys.seal(innerType: data[0], body: data.dropFirst(), into: &packet)
            let output = session.receive(packet, now: world.now)
            if let payload = output.payload {
                precondition(payload.type.rawValue == data[0] && payload.body.elementsEqual(data.dropFirst()))
            }
        }
        // Past mac1: the bytes as a handshake message with a valid mac1.
        for type in [PacketType.handshakeInitiation, .handshakeResponse] {
            var message = HandshakePacket.header(type) + data
            let length =
                type == .handshakeInitiation ? HandshakePacket.initiationLength : HandshakePacket.responseLength
            message = Array(message.prefix(length - HandshakePacket.mac1Length))
            var copy = world.responderSession
            _ = copy.receive(HandshakePacket.appendingMAC1(message, key: world.responderMAC1Key), now: world.now)
        }
    }

    public static func transportSeeds() -> [[UInt8]] {
        let world = FuzzWorld.shared
        var keys = world.initiatorKeypair
        var seeds: [[UInt8]] = [world.initiation, Array(world.initiation[4..<116])]
        for (type, body) in [(InnerPacketType.keepalive, [UInt8]()), (.media, [UInt8](repeating: 0x55, count: 100))] {
            var packet: [UInt8] = []
            keys.seal(innerType: type.rawValue, body: body, into: &packet)
            seeds.append(packet)
            seeds.append([type.rawValue] + body)
        }
        return seeds
    }
}

extension ParleyProtocolFuzz {
    // MARK: Frames passed on by a member (§15)

    /// The bytes as a FAN_DELIVER's relay body and as a signed frame from Alice; and, as media,
    /// signed by Alice: that opens to the same media once, and not again.
    public static func fanOutFrame(_ data: [UInt8]) {
        let world = FuzzWorld.shared
        var verifier = FanOutVerifier(originKey: world.alice.publicKey, roomID: world.keys.roomID, epoch: 7)
        _ = try? RelayPacket(parsing: data)
        _ = verifier.open(data[...])
        guard (10...1200).contains(data.count) else { return }
        var signer = FanOutSigner(identity: world.alice, roomID: world.keys.roomID, epoch: 7)
        var frame: [UInt8] = []
        data.withUnsafeBytes { signer.sign($0, into: &frame) }
        var fresh = FanOutVerifier(originKey: world.alice.publicKey, roomID: world.keys.roomID, epoch: 7)
        precondition(fresh.open(frame[...]) == .success(data[...]), "Alice's signed frame does not open")
        precondition(fresh.open(frame[...]) == .failure(.replayed), "a signed frame opens twice")
    }

    public static func fanOutSeeds() -> [[UInt8]] {
        let world = FuzzWorld.shared
        var signer = FanOutSigner(identity: world.alice, roomID: world.keys.roomID, epoch: 7)
        var frame: [UInt8] = []
        let media: [UInt8] = [1, 0, 0x12, 0x34, 1, 2, 3, 4, 3, 0xC0, 0xF8, 0x50, 0x51]
        media.withUnsafeBytes { signer.sign($0, into: &frame) }
        return [media, frame, RelayPacket(kind: .fanDeliver, peer: world.alice.publicKey, payload: frame).encoded()]
    }

    // MARK: Security code agreement messages (§10, §11.1)

    /// `control_type || body` as COMMIT or REVEAL: a parsed message re-encodes to itself, and an
    /// agreement fed with it (as is, and moved into its view and round, so the deep paths are
    /// reached) never crashes and never shows a code for a view it does not hold.
    public static func securityCode(_ data: [UInt8]) {
        guard let type = data.first else { return }
        var reader = ByteReader(Array(data.dropFirst()))
        guard let message = try? SecurityCodeMessage(controlType: type, body: &reader) else { return }
        var again = ByteReader(Array(message.encoded().dropFirst()))
        precondition((try? SecurityCodeMessage(controlType: type, body: &again)) == message)
        let world = FuzzWorld.shared
        var agreement = world.codeAgreement
        let view = agreement.view!
        var variants = [message]
        for round in [agreement.round, agreement.round + 1, agreement.round &- 1] {
            switch message {
            case .commit(var commit):
                commit.viewHash = view.hash
                commit.round = round
                variants.append(.commit(commit))
            case .reveal(var reveal):
                reveal.viewHash = view.hash
                reveal.round = round
                variants.append(.reveal(reveal))
            }
        }
        for variant in variants {
            for outgoing in agreement.received(variant, from: world.alice.publicKey) {
                precondition(outgoing.peer == world.alice.publicKey && outgoing.message.viewHash == view.hash)
            }
            _ = agreement.repeated(to: world.alice.publicKey)
        }
    }

    public static func securityCodeSeeds() -> [[UInt8]] {
        let world = FuzzWorld.shared
        let view = world.codeAgreement.view!
        let round = world.codeAgreement.round
        let nonce = [UInt8](repeating: 0x5A, count: 32)
        return [
            SecurityCodeMessage.commit(
                .init(
                    viewHash: view.hash, round: round,
                    commitment: view.commitment(of: nonce, by: world.alice.publicKey, round: round))
            ).encoded(),
            SecurityCodeMessage.reveal(.init(viewHash: view.hash, round: round, nonce: nonce, complete: true))
                .encoded(),
        ]
    }
}

/// Fixed keys and sessions the fuzz targets share (created once; never mutated after).
struct FuzzWorld: Sendable {
    static let shared = FuzzWorld()

    let roomSecret = SecureBytes(copying: (0..<32).map { UInt8($0) })
    let keys: RoomKeys
    let alice: NodeIdentity
    let bob: NodeIdentity
    let now = Instant.now
    /// Bob's session with Alice after a completed handshake (Bob responded and Alice confirmed).
    let responderSession: PeerSession
    /// Alice's side of the same keys, to seal packets Bob accepts.
    let initiatorKeypair: TransportKeypair
    let initiation: [UInt8]
    let responderMAC1Key: SecureBytes
    /// Bob's security code agreement with Alice in its view (round 1, its COMMIT sent).
    let codeAgreement: SecurityCodeAgreement

    init() {
        keys = try! RoomKeys(roomSecret: roomSecret)
        alice = try! NodeIdentity(
            identitySeed: SecureBytes(copying: [UInt8](repeating: 1, count: 32)),
            staticSecret: SecureBytes(copying: [UInt8](repeating: 2, count: 32)))
        bob = try! NodeIdentity(
            identitySeed: SecureBytes(copying: [UInt8](repeating: 3, count: 32)),
            staticSecret: SecureBytes(copying: [UInt8](repeating: 4, count: 32)))
        responderMAC1Key = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: bob.peerIdentity.staticKey)
        let start = TAI64N(unixNanoseconds: 1_700_000_000_000_000_000)
        let pending = ParleyHandshake.initiate(
            local: alice, peer: bob.peerIdentity, keys: keys, version: 1, localIndex: 1, timestamp: start)
        initiation = pending.packet
        let accepted = try! ParleyHandshake.acceptInitiation(
            pending.packet, local: bob, peer: alice.peerIdentity, keys: keys, version: 1, mac1Key: responderMAC1Key)
        let response = try! ParleyHandshake.respond(to: accepted, peer: alice.peerIdentity, keys: keys, localIndex: 2)
        let aliceMAC1 = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: alice.peerIdentity.staticKey)
        let finished = try! ParleyHandshake.acceptResponse(response.packet, initiation: pending, mac1Key: aliceMAC1)
        initiatorKeypair = TransportKeypair(
            localIndex: 1, remoteIndex: 2, keys: finished.keys, isInitiator: true, createdAt: now)
        var session = PeerSession(
            local: bob, peer: alice.peerIdentity, keys: keys, wallClock: WallClock { 1_700_000_000_000_000_000 })
        session.current = TransportKeypair(
            localIndex: 2, remoteIndex: 1, keys: response.keys, isInitiator: false, createdAt: now)
        responderSession = session
        var agreement = SecurityCodeAgreement(
            roomID: keys.roomID, me: CodeMember(identityKey: bob.publicKey, name: "bob"),
            nonces: { [UInt8](repeating: 0x42, count: 32) })
        _ = agreement.viewChanged(peers: [CodeMember(identityKey: alice.publicKey, name: "alice")])
        codeAgreement = agreement
    }
}
