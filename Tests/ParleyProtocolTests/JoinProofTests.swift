import ParleyProtocol
import Sodium
import Testing

@Suite("Join proof")
struct JoinProofTests {
    @Test func validProofVerifiesWithTheRoomIDOnly() {
        let room = Ed25519.KeyPair.generate()
        let nonce = RandomBytes.bytes(count: 32)
        let proof = JoinProof.make(nonce: nonce, roomKey: room)
        #expect(JoinProof.verify(proof, nonce: nonce, roomID: room.publicKey))
    }

    @Test func proofIsBoundToItsNonceAndRoom() {
        let room = Ed25519.KeyPair.generate()
        let otherRoom = Ed25519.KeyPair.generate()
        let nonce = RandomBytes.bytes(count: 32)
        let proof = JoinProof.make(nonce: nonce, roomKey: room)
        #expect(!JoinProof.verify(proof, nonce: RandomBytes.bytes(count: 32), roomID: room.publicKey))
        #expect(!JoinProof.verify(proof, nonce: nonce, roomID: otherRoom.publicKey))
        #expect(
            !JoinProof.verify(JoinProof.make(nonce: nonce, roomKey: otherRoom), nonce: nonce, roomID: room.publicKey))
        #expect(!JoinProof.verify(Array(proof.prefix(10)), nonce: nonce, roomID: room.publicKey))
        #expect(!JoinProof.verify(proof, nonce: Array(nonce.prefix(31)), roomID: room.publicKey))
    }

    /// A plain Ed25519 signature of the nonce (without the context string) is not a proof:
    /// the context keeps a room key's signatures from being reused across purposes.
    @Test func signatureWithoutContextIsRejected() {
        let room = Ed25519.KeyPair.generate()
        let nonce = RandomBytes.bytes(count: 32)
        #expect(!JoinProof.verify(room.sign(nonce + room.publicKey), nonce: nonce, roomID: room.publicKey))
    }
}
