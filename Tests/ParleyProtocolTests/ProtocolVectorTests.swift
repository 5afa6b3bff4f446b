import Foundation
import ParleyCore
import ParleyTestSupport
import Sodium
import Testing

@testable import ParleyProtocol

/// Known-answer vectors for a second implementation (docs/PROTOCOL.md names each file):
/// `Tests/Fixtures/protocol-v1-<section>.json`. Fixed inputs go in, every derived byte comes out.
/// The tests recompute every deterministic vector from its inputs and compare; randomized ones
/// (sealed boxes) are opened. `PARLEY_WRITE_FIXTURES=1 swift test --filter ProtocolVectorTests`
/// rewrites the files (then check them against an independent implementation before committing).
@Suite("Known-answer vectors (Tests/Fixtures/protocol-v1-*.json)")
struct ProtocolVectorTests {
    static let writing = TestEnvironment.environment("PARLEY_WRITE_FIXTURES") == "1"

    // MARK: Fixed inputs

    static func pattern(_ start: UInt8, _ count: Int = 32) -> [UInt8] { (0..<count).map { start &+ UInt8($0) } }
    static let roomSecret = pattern(0x00)
    static let aliceSeed = pattern(0x40)
    static let aliceStatic = pattern(0x60)
    static let bobSeed = pattern(0x80)
    static let bobStatic = pattern(0xA0)
    static let initiatorEphemeral = pattern(0xC0)
    static let responderEphemeral = pattern(0xE0)
    static let joinNonce = pattern(0x20)

    static func identity(_ seed: [UInt8], _ staticSecret: [UInt8]) -> NodeIdentity {
        try! NodeIdentity(identitySeed: SecureBytes(copying: seed), staticSecret: SecureBytes(copying: staticSecret))
    }
    static func keys() -> RoomKeys { try! RoomKeys(roomSecret: SecureBytes(copying: roomSecret)) }
    static func bytes(_ secret: SecureBytes) -> [UInt8] { secret.withUnsafeBytes { Array($0) } }

    // MARK: §2 invites

    static func inviteVectors() throws -> [String: Any] {
        let secret = SecureBytes(copying: roomSecret)
        let cases: [(String, [UInt8]?, [TURNHint])] = [
            ("ws://192.0.2.1:7777", nil, []),
            ("wss://rv.example.org", pattern(0x90), []),
            (
                "wss://rv.example.org:8443/parley", pattern(0x90),
                [try TURNHint(uri: "turn:turn.example.org:3478?transport=udp", username: "alice", password: "secret")]
            ),
            ("ws://[2001:db8::1]:7777", nil, [try TURNHint(uri: "turns:turn.example.org")]),
        ]
        var valid: [[String: Any]] = []
        var invites: [Invite] = []
        for (url, pin, hints) in cases {
            let invite = try Invite(
                roomSecret: secret, rendezvous: RendezvousURL(parsing: url), tlsPin: pin, turnHints: hints)
            invites.append(invite)
            let hintObjects: [[String: String]] = hints.map {
                ["uri": $0.uri, "username": $0.username, "password": $0.password]
            }
            let pinObject: Any = pin.map { hexString($0) } ?? NSNull()
            var object: [String: Any] = ["room_secret": hexString(roomSecret), "rendezvous_url": url]
            object["tls_pin"] = pinObject
            object["turn_hints"] = hintObjects
            object["binary"] = hexString(bytes(invite.encodedBytes()))
            object["invite"] = invite.string
            valid.append(object)
        }
        let text = invites[1].string
        let body = String(text.dropFirst(Invite.prefix.count))
        var typo = Array(body)
        typo[30] = typo[30] == "a" ? "b" : "a"
        let pasted: [String] = [
            "  \(text)\n", "\"\(text)\"", "<\(text)>", "Parley1:\(body)", text.uppercased(),
            "parley1:\(body.prefix(40))\n\(body.dropFirst(40).prefix(40))\r\n  \(body.dropFirst(80))",
            "parley1:\(body.prefix(20))\u{200B}\(body.dropFirst(20))",
        ]
        let invalid: [String] = [
            "", "https://rv.example.org", "parley2:\(body)", "parley1:\(body.dropLast(5))", "parley1:\(body)aa",
            "parley1:\(String(typo))", "parley1:\(body.prefix(10))1\(body.dropFirst(11))",
        ]
        var invalidObjects: [[String: String]] = []
        for input in invalid {
            do {
                _ = try Invite(parsing: input)
                throw FixtureError("\(input) parsed")
            } catch let error as InviteError {
                invalidObjects.append(["text": input, "error": error.code])
            }
        }
        let pastedObjects: [[String: String]] = pasted.map { ["text": $0, "invite": text] }
        var result: [String: Any] = [:]
        result["description"] =
            "§2: invite strings. valid: inputs → binary and string; pasted: variants that must parse to the second valid invite; invalid: strings that must be refused, with the error kind"
        result["valid"] = valid
        result["pasted"] = pastedObjects
        result["invalid"] = invalidObjects
        return result
    }

    // MARK: §3 keys, §5 identity, §11 security code

    static func keyVectors() -> [String: Any] {
        let keys = keys()
        var result: [String: Any] = [
            "description":
                "§3: crypto_kdf subkeys (id 1) of the room secret, the room key, and a join proof; §4.1: the room's shard key and the request paths it gives",
            "room_secret": hexString(roomSecret),
            "room_key_seed": hexString(bytes(keys.roomKey.seed)),
            "room_id": hexString(keys.roomID),
            "signaling_key": hexString(bytes(keys.signalingKey)),
            "noise_psk": hexString(bytes(keys.noisePSK)),
            "mac_key": hexString(bytes(keys.macKey)),
            "join_nonce": hexString(joinNonce),
            "join_proof": hexString(keys.joinProof(nonce: joinNonce)),
            "shard_key": RendezvousShard.key(roomID: keys.roomID),
        ]
        result["shard_paths"] = ["/", "/parley", "/parley/"].map { invitePath -> [String: String] in
            [
                "invite_path": invitePath,
                "request_path": RendezvousShard.path(invitePath: invitePath, roomID: keys.roomID),
            ]
        }
        return result
    }

    static func identityVectors() -> [String: Any] {
        let entries = [(aliceSeed, aliceStatic), (bobSeed, bobStatic)].map { seed, staticSecret -> [String: Any] in
            let node = identity(seed, staticSecret)
            let object: [String: String] = [
                "identity_seed": hexString(seed), "static_secret": hexString(staticSecret),
                "identity_key": hexString(node.publicKey), "static_key": hexString(node.peerIdentity.staticKey),
                "binding_signature": hexString(node.peerIdentity.bindingSignature),
                "file": hexString(bytes(node.fileContents())),
            ]
            return object
        }
        return [
            "description": "§5: node identities, their X25519 binding signatures and identity files",
            "identities": entries,
        ]
    }

    /// §11.1: a view hash, commitments, the two messages and the code, and a whole agreement —
    /// alice and bob, then carol joining: view changes, every message each node sends, and where
    /// everything in flight is delivered, first in first out, over sessions both sides hold
    /// (nonce k of node i: `i || 23 zero bytes || k: u64`).
    static func securityCodeVectors() -> [String: Any] {
        let roomID = keys().roomID
        let members = [
            CodeMember(identityKey: identity(aliceSeed, aliceStatic).publicKey, name: "Alice Ω"),
            CodeMember(identityKey: identity(bobSeed, bobStatic).publicKey, name: "bob"),
            CodeMember(identityKey: pattern(0x33), name: "carol"),
        ]
        var meeting = CodeMeeting(members: members, roomID: roomID)
        meeting.setView(of: 0, to: [1])
        meeting.setView(of: 1, to: [0])
        meeting.run()
        let pairCode = meeting.codes[0]!
        meeting.setView(of: 0, to: [1, 2])
        meeting.setView(of: 2, to: [0, 1])
        meeting.setView(of: 1, to: [0, 2])
        meeting.run()
        let view = meeting.nodes[0].view!
        let steps: [[String: Any]] = meeting.log.compactMap { event in
            switch event {
            case .view(let node, let peers): ["view": node, "peers": peers]
            case .sent(let sent):
                ["from": sent.from, "to": sent.to, "message": hexString(sent.message.encoded())]
            case .run: ["deliver": "all"]
            case .delivered: nil
            }
        }
        let nonce = CodeMeeting.nonces(0)()
        let memberList: [[String: String]] = view.members.map {
            ["identity_key": hexString($0.identityKey), "name": $0.name]
        }
        return [
            "description": "§11.1: the security code agreement (view hash, commitment, code, messages, a whole run)",
            "room_id": hexString(roomID),
            "view": ["members": memberList, "view_hash": hexString(view.hash)] as [String: Any],
            "commitment": [
                "sender": hexString(members[0].identityKey), "round": 7, "nonce": hexString(nonce),
                "commitment": hexString(view.commitment(of: nonce, by: members[0].identityKey, round: 7)),
            ] as [String: Any],
            "code": [
                "nonces": view.members.indices.map { hexString(CodeMeeting.nonces(10 + $0)()) },
                "digits": SecurityCode(
                    viewHash: view.hash, nonces: view.members.indices.map { CodeMeeting.nonces(10 + $0)() }
                ).digits,
            ] as [String: Any],
            "run": [
                "steps": steps, "pair_code": pairCode.description, "meeting_code": meeting.codes[0]!.description,
            ] as [String: Any],
        ]
    }

    // MARK: §6 envelopes

    static func envelopeVectors() throws -> [String: Any] {
        let keys = keys()
        let alice = identity(aliceSeed, aliceStatic)
        let bob = identity(bobSeed, bobStatic)
        let hello = try Hello(identity: alice.peerIdentity, sessionEpoch: 0x0102_0304_0506_0708, displayName: "Alice Ω")
        let credentials = try ICECredentials(
            generation: 2, usernameFragment: "F00d", password: "abcdefghijklmnopqrstuv+/")
        let plain: [(SignalingMessage, EnvelopeRecipient)] = [
            (.hello(hello), .everyone), (.hello(hello), .peer(bob.peerIdentity)),
            (.iceCandidatesDone(generation: 2), .peer(bob.peerIdentity)),
            (.iceRestart(generation: 3), .peer(bob.peerIdentity)),
            (.bye, .everyone),
        ]
        let sealed: [SignalingMessage] = [
            .iceCredentials(credentials),
            .iceCandidate(generation: 2, candidate: "candidate:1 1 UDP 2130706431 192.0.2.10 54321 typ host"),
        ]
        func entry(
            _ message: SignalingMessage, _ recipient: EnvelopeRecipient, sequence: UInt64, nonce: [UInt8]?
        ) throws
            -> [String: Any]
        {
            let envelope =
                try nonce.map {
                    try Envelope.seal(message, to: recipient, from: alice, sequence: sequence, keys: keys, nonce: $0)
                } ?? Envelope.seal(message, to: recipient, from: alice, sequence: sequence, keys: keys)
            let plaintext = try Envelope.decrypt(envelope, keys: keys)
            var object: [String: Any] = ["message": describe(message)]
            object["recipient"] = hexString(recipient.identityField)
            object["sequence"] = String(sequence)
            object["nonce"] = hexString(envelope[1..<25])
            object["plaintext"] = hexString(plaintext)
            object["envelope"] = hexString(envelope)
            return object
        }
        var deterministic: [[String: Any]] = []
        for (index, item) in plain.enumerated() {
            let nonce = pattern(UInt8(0x50 + index), 24)
            deterministic.append(
                try entry(item.0, item.1, sequence: 1_700_000_000_000_000 + UInt64(index), nonce: nonce))
        }
        var sealedObjects: [[String: Any]] = []
        for (index, message) in sealed.enumerated() {
            let sequence = 1_700_000_000_000_100 + UInt64(index)
            sealedObjects.append(try entry(message, .peer(bob.peerIdentity), sequence: sequence, nonce: nil))
        }
        var result: [String: Any] = [:]
        result["description"] =
            "§6: envelopes from the first identity of protocol-v1-identity.json to the second, in the room of protocol-v1-keys.json. deterministic: fixed nonces, reproduce byte for byte; sealed: sealed boxes are randomized, so open them as the recipient and compare the message"
        result["deterministic"] = deterministic
        result["sealed"] = sealedObjects
        return result
    }

    /// A JSON description of a message, field by field, as the spec names them.
    static func describe(_ message: SignalingMessage) -> [String: Any] {
        var object: [String: Any] = [:]
        switch message {
        case .hello(let hello):
            object["type"] = "HELLO"
            object["static_key"] = hexString(hello.identity.staticKey)
            object["binding_signature"] = hexString(hello.identity.bindingSignature)
            object["session_epoch"] = String(hello.sessionEpoch)
            object["versions"] = hello.protocolVersions.map { Int($0) }
            object["display_name"] = hello.displayName
        case .iceCredentials(let credentials):
            object["type"] = "ICE_CREDENTIALS"
            object["generation"] = Int(credentials.generation)
            object["ufrag"] = credentials.usernameFragment
            object["password"] = credentials.password
        case .iceCandidate(let generation, let candidate):
            object["type"] = "ICE_CANDIDATE"
            object["generation"] = Int(generation)
            object["candidate"] = candidate
        case .iceCandidatesDone(let generation):
            object["type"] = "ICE_CANDIDATES_DONE"
            object["generation"] = Int(generation)
        case .iceRestart(let generation):
            object["type"] = "ICE_RESTART"
            object["generation"] = Int(generation)
        case .bye:
            object["type"] = "BYE"
            object["reason"] = 0
        }
        return object
    }

    // MARK: §7, §8 handshake and transport

    static func handshakeVectors() throws -> [String: Any] {
        let keys = keys()
        let alice = identity(aliceSeed, aliceStatic)
        let bob = identity(bobSeed, bobStatic)
        #expect(
            alice.publicKey.lexicographicallyPrecedes(bob.publicKey), "the first identity is the preferred initiator")
        let timestamp = TAI64N(unixNanoseconds: 1_700_000_000_123_456_789)
        let initiation = ParleyHandshake.initiate(
            local: alice, peer: bob.peerIdentity, keys: keys, version: 1, localIndex: 0x1122_3344, timestamp: timestamp,
            ephemeral: try X25519.KeyPair(secretKey: SecureBytes(copying: initiatorEphemeral)))
        let bobMAC1 = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: bob.peerIdentity.staticKey)
        let aliceMAC1 = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: alice.peerIdentity.staticKey)
        let accepted = try ParleyHandshake.acceptInitiation(
            initiation.packet, local: bob, peer: alice.peerIdentity, keys: keys, version: 1, mac1Key: bobMAC1)
        let response = try ParleyHandshake.respond(
            to: accepted, peer: alice.peerIdentity, keys: keys, localIndex: 0x5566_7788,
            ephemeral: try X25519.KeyPair(secretKey: SecureBytes(copying: responderEphemeral)))
        let finished = try ParleyHandshake.acceptResponse(response.packet, initiation: initiation, mac1Key: aliceMAC1)
        #expect(finished.keys.handshakeHash == response.keys.handshakeHash)
        var initiatorKeys = TransportKeypair(
            localIndex: 0x1122_3344, remoteIndex: finished.remoteIndex, keys: finished.keys, isInitiator: true,
            createdAt: .now)
        var responderKeys = TransportKeypair(
            localIndex: 0x5566_7788, remoteIndex: accepted.remoteIndex, keys: response.keys, isInitiator: false,
            createdAt: .now)
        var packets: [[String: Any]] = []
        let transport: [(Bool, InnerPacketType, [UInt8])] = [
            (true, .keepalive, []), (false, .media, pattern(0x70, 100)), (true, .sessionControl, Array("control".utf8)),
            (true, .media, []),
        ]
        for (fromInitiator, type, body) in transport {
            var packet: [UInt8] = []
            let counter = fromInitiator ? initiatorKeys.sendCounter : responderKeys.sendCounter
            if fromInitiator {
                initiatorKeys.seal(innerType: type.rawValue, body: body, into: &packet)
            } else {
                responderKeys.seal(innerType: type.rawValue, body: body, into: &packet)
            }
            var object: [String: Any] = ["from": fromInitiator ? "initiator" : "responder"]
            object["counter"] = Int(counter)
            object["inner_type"] = Int(type.rawValue)
            object["body"] = hexString(body)
            object["packet"] = hexString(packet)
            packets.append(object)
        }
        let prologue = ParleyHandshake.prologue(
            version: 1, roomID: keys.roomID, initiator: alice.publicKey, responder: bob.publicKey)
        let fields: [String: String] = [
            "description":
                "§7–§8: one Parley handshake between the identities of protocol-v1-identity.json (the first initiates) in the room of protocol-v1-keys.json, then transport packets",
            "initiator_ephemeral_secret": hexString(initiatorEphemeral),
            "responder_ephemeral_secret": hexString(responderEphemeral),
            "initiator_index": "287454020", "responder_index": "1432778632",
            "timestamp_unix_ns": "1700000000123456789", "timestamp_tai64n": hexString(timestamp.bytes),
            "prologue": hexString(prologue),
            "mac1_key_to_responder": hexString(bytes(bobMAC1)), "mac1_key_to_initiator": hexString(bytes(aliceMAC1)),
            "initiation": hexString(initiation.packet), "response": hexString(response.packet),
            "handshake_hash": hexString(response.keys.handshakeHash),
            "initiator_send_key": hexString(bytes(finished.keys.send)),
            "initiator_receive_key": hexString(bytes(finished.keys.receive)),
        ]
        var result: [String: Any] = fields
        result["protocol_version"] = 1
        result["transport"] = packets
        return result
    }

    // MARK: Writing and checking

    static let fileNames = [
        "protocol-v1-invite.json", "protocol-v1-keys.json", "protocol-v1-identity.json", "protocol-v1-envelope.json",
        "protocol-v1-handshake.json", "protocol-v1-security-code.json",
    ]

    static func make(_ name: String) throws -> [String: Any] {
        switch name {
        case "protocol-v1-invite.json": try inviteVectors()
        case "protocol-v1-keys.json": keyVectors()
        case "protocol-v1-identity.json": identityVectors()
        case "protocol-v1-envelope.json": try envelopeVectors()
        case "protocol-v1-handshake.json": try handshakeVectors()
        case "protocol-v1-security-code.json": securityCodeVectors()
        default: throw FixtureError("no vectors named \(name)")
        }
    }

    /// Pretty JSON with the keys in code-point order. Not `.sortedKeys`: Foundation's comparison
    /// for it is not a consistent order for keys sharing a prefix (`shard_key`, `shard_paths`), so
    /// the same object came out in two orders depending on where it came from.
    static func json(_ object: Any) throws -> String {
        try canonical(object, indent: "") + "\n"
    }

    static func canonical(_ value: Any, indent: String) throws -> String {
        let inner = indent + "  "
        if let dictionary = value as? [String: Any] {
            guard !dictionary.isEmpty else { return "{}" }
            let members = try dictionary.keys.sorted().map { key in
                "\(inner)\(try canonical(key, indent: inner)) : \(try canonical(dictionary[key]!, indent: inner))"
            }
            return "{\n" + members.joined(separator: ",\n") + "\n\(indent)}"
        }
        if let array = value as? [Any] {
            guard !array.isEmpty else { return "[]" }
            let elements = try array.map { inner + (try canonical($0, indent: inner)) }
            return "[\n" + elements.joined(separator: ",\n") + "\n\(indent)]"
        }
        let data = try JSONSerialization.data(
            withJSONObject: value, options: [.fragmentsAllowed, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    static func load(_ name: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(try Fixtures.read(name))) as! [String: Any]
    }

    @Test(.enabled(if: writing)) func writeFixtures() throws {
        for name in Self.fileNames { try Fixtures.write(name, Array(try Self.json(try Self.make(name)).utf8)) }
    }

    /// Every deterministic vector recomputes to exactly the committed bytes.
    @Test(arguments: [
        "protocol-v1-invite.json", "protocol-v1-keys.json", "protocol-v1-identity.json",
        "protocol-v1-handshake.json", "protocol-v1-security-code.json",
    ])
    func deterministicVectorsReproduce(name: String) throws {
        let computed = try Self.json(try Self.make(name))
        let committed = try Self.json(try Self.load(name))
        #expect(computed == committed, "\(name) no longer reproduces")
    }

    @Test func envelopeVectorsReproduceAndOpen() throws {
        let file = try Self.load("protocol-v1-envelope.json")
        let computed = try Self.envelopeVectors()
        #expect(try Self.json(computed["deterministic"]!) == (try Self.json(file["deterministic"]!)))
        let bob = Self.identity(Self.bobSeed, Self.bobStatic)
        var replayGuard = EnvelopeReplayGuard()
        let entries = (file["deterministic"] as! [[String: Any]]) + (file["sealed"] as! [[String: Any]])
        for entry in entries {
            let received = try Envelope.open(
                hex(entry["envelope"] as! String), as: bob, keys: Self.keys(), replayGuard: &replayGuard)
            #expect(try Self.json(Self.describe(received.message)) == (try Self.json(entry["message"]!)))
            #expect(String(received.sequence) == entry["sequence"] as? String)
        }
        #expect((file["sealed"] as! [[String: Any]]).count == 2)
    }

    /// The invite file's pasted and invalid strings behave as recorded, independently of how the
    /// recorded valid invites were produced.
    @Test func inviteVectorsParseAsRecorded() throws {
        let file = try Self.load("protocol-v1-invite.json")
        for entry in file["valid"] as! [[String: Any]] {
            let invite = try Invite(parsing: entry["invite"] as! String)
            #expect(hexString(Self.bytes(invite.encodedBytes())) == entry["binary"] as? String)
            #expect(invite.rendezvous.description == entry["rendezvous_url"] as? String)
        }
        for entry in file["pasted"] as! [[String: Any]] {
            #expect(try Invite(parsing: entry["text"] as! String).string == entry["invite"] as? String)
        }
        for entry in file["invalid"] as! [[String: Any]] {
            let error = #expect(throws: InviteError.self) { try Invite(parsing: entry["text"] as! String) }
            #expect(error?.code == entry["error"] as? String)
        }
    }

    /// The handshake file's packets are accepted by the receiving side's code paths.
    @Test func handshakeVectorsAreAcceptedByTheResponder() throws {
        let file = try Self.load("protocol-v1-handshake.json")
        let keys = Self.keys()
        let alice = Self.identity(Self.aliceSeed, Self.aliceStatic)
        let bob = Self.identity(Self.bobSeed, Self.bobStatic)
        let mac1 = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: bob.peerIdentity.staticKey)
        let accepted = try ParleyHandshake.acceptInitiation(
            hex(file["initiation"] as! String), local: bob, peer: alice.peerIdentity, keys: keys, version: 1,
            mac1Key: mac1)
        #expect(hexString(accepted.timestamp.bytes) == file["timestamp_tai64n"] as? String)
        #expect(accepted.remoteIndex == 0x1122_3344)
    }
}
