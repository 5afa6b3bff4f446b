import ParleyCore
import Sodium
import Testing

@testable import ParleyProtocol

/// The rendezvous sees the room id, one join proof per connection and the envelopes it relays
/// (docs/PROTOCOL.md §3.4). The keys derive from the room secret by independent one-way steps, so
/// none of that gives it another key. These tests play a curious rendezvous that tries the
/// shortcuts a broken design would allow, and check that each one fails.
@Suite("What the rendezvous sees")
struct RendezvousViewTests {
    @Test func roomIDAndProofsDoNotYieldAnyOtherKey() throws {
        let keys = try RoomKeys(roomSecret: .random(count: 32))
        let proofs = (0..<4).map { _ in keys.joinProof(nonce: RandomBytes.bytes(count: 32)) }
        let secrets = [keys.signalingKey, keys.noisePSK, keys.macKey, keys.roomKey.seed]
        // Everything the rendezvous holds, used as a master key or hashed as a guess.
        var material = [keys.roomID] + proofs.map { Array($0.prefix(32)) } + proofs.map { Array($0.suffix(32)) }
        material += try material.map { try BLAKE2b.hash($0, outputLength: 32) } + material.map { SHA256.hash($0) }
        for guess in material {
            let guessedKeys = try RoomKeys(roomSecret: SecureBytes(copying: guess))
            for candidate in [
                guessedKeys.signalingKey, guessedKeys.noisePSK, guessedKeys.macKey, SecureBytes(copying: guess),
            ] {
                #expect(!secrets.contains(candidate))
            }
            for context in ["parl-sig", "parl-psk", "parl-mac", "parl-rid"] {
                let derived = try KDF.deriveKey(
                    length: 32, id: 1, context: context, masterKey: SecureBytes(copying: guess))
                #expect(!secrets.contains(derived))
            }
        }
    }

    /// With only the room id (and a join proof it verified), the rendezvous can neither read an
    /// envelope nor get a handshake past mac1, whatever it derives from the room id.
    @Test func theRendezvousViewCannotReadSignalingOrStartAHandshake() throws {
        let keys = try RoomKeys(roomSecret: .random(count: 32))
        let alice = NodeIdentity.generate()
        let bob = NodeIdentity.generate()
        let envelope = try Envelope.seal(
            .hello(try Hello(identity: alice.peerIdentity, sessionEpoch: 1, displayName: "Alice")), to: .everyone,
            from: alice, sequence: 1, keys: keys)
        let curious = try RoomKeys(roomSecret: SecureBytes(copying: keys.roomID))
        var replayGuard = EnvelopeReplayGuard()
        #expect(throws: EnvelopeError.authenticationFailed) {
            try Envelope.open(envelope, as: bob, keys: curious, replayGuard: &replayGuard)
        }
        // Even holding Alice's own keys, anyone who derives the room keys from what the rendezvous
        // sees gets an initiation to Bob dropped at mac1, before any Diffie-Hellman.
        let forged = ParleyHandshake.initiate(
            local: alice, peer: bob.peerIdentity, keys: curious, version: 1, localIndex: 1,
            timestamp: TAI64N(unixNanoseconds: 1))
        var session = PeerSession(local: bob, peer: alice.peerIdentity, keys: keys)
        #expect(session.receive(forged.packet, now: .now).dropped == .handshake(.badMAC))
    }
}
