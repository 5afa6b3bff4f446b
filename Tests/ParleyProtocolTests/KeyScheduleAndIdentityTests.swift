import ParleyTestSupport
import Sodium
import Testing

@testable import ParleyProtocol

#if canImport(Glibc)
import Glibc
#endif

@Suite("Key schedule (§3) and node identity (§5)")
struct KeyScheduleAndIdentityTests {
    @Test func keysAreDeterministicDistinctAndPerRoom() throws {
        let secret = SecureBytes.random(count: 32)
        let a = try RoomKeys(roomSecret: secret)
        let b = try RoomKeys(roomSecret: secret)
        let other = try RoomKeys(roomSecret: .random(count: 32))
        #expect(
            a.roomID == b.roomID && a.signalingKey == b.signalingKey && a.noisePSK == b.noisePSK && a.macKey == b.macKey
        )
        let all = [a.roomKey.seed, a.signalingKey, a.noisePSK, a.macKey, secret]
        for i in all.indices { for j in all.indices where i < j { #expect(all[i] != all[j]) } }
        #expect(a.roomID != other.roomID && a.signalingKey != other.signalingKey && a.noisePSK != other.noisePSK)
        #expect(throws: SodiumError.self) { try RoomKeys(roomSecret: .random(count: 16)) }
    }

    @Test func joinProofUsesTheDerivedRoomKey() throws {
        let keys = try RoomKeys(roomSecret: .random(count: 32))
        let nonce = RandomBytes.bytes(count: 32)
        let proof = keys.joinProof(nonce: nonce)
        #expect(JoinProof.verify(proof, nonce: nonce, roomID: keys.roomID))
        let stranger = try RoomKeys(roomSecret: .random(count: 32))
        #expect(!JoinProof.verify(stranger.joinProof(nonce: nonce), nonce: nonce, roomID: keys.roomID))
    }

    @Test func identityBindingVerifiesAndRejectsSubstitution() throws {
        let node = NodeIdentity.generate()
        let other = NodeIdentity.generate()
        let peer = node.peerIdentity
        #expect(
            try PeerIdentity(
                identityKey: peer.identityKey, staticKey: peer.staticKey, bindingSignature: peer.bindingSignature)
                == peer)
        // Someone else's static key, or a signature moved to another identity, does not bind.
        #expect(throws: SodiumError.invalidSignature) {
            try PeerIdentity(
                identityKey: peer.identityKey, staticKey: other.peerIdentity.staticKey,
                bindingSignature: peer.bindingSignature)
        }
        #expect(throws: SodiumError.invalidSignature) {
            try PeerIdentity(
                identityKey: other.publicKey, staticKey: peer.staticKey, bindingSignature: peer.bindingSignature)
        }
        #expect(throws: SodiumError.invalidSignature) {
            try PeerIdentity(identityKey: peer.identityKey, staticKey: [1, 2], bindingSignature: peer.bindingSignature)
        }
    }

    @Test func identityIsCreatedOnceWithPrivatePermissionsAndLoadedAfter() throws {
        let directory = try TemporaryDirectory()
        let state = directory.path + "/state/nested"
        let created = try NodeIdentity.loadOrCreate(stateDirectory: state)
        let file = state + "/" + NodeIdentity.fileName
        #expect(try fileMode(file) == 0o600)
        #expect(try fileMode(state) == 0o700)
        let loaded = try NodeIdentity.loadOrCreate(stateDirectory: state)
        #expect(loaded.peerIdentity == created.peerIdentity)
        #expect(try NodeIdentity.loadOrCreate(stateDirectory: state).publicKey == created.publicKey)
    }

    @Test func corruptOrExposedIdentityFilesAreClearErrors() throws {
        let directory = try TemporaryDirectory()
        let state = directory.path
        _ = try NodeIdentity.loadOrCreate(stateDirectory: state)
        let file = state + "/" + NodeIdentity.fileName
        let original = try readFile(file)

        chmod(file, 0o644)
        let exposed = #expect(throws: StateFileError.self) { try NodeIdentity.loadOrCreate(stateDirectory: state) }
        #expect(exposed?.description.contains("mode 644") == true)
        #expect(exposed?.description.contains("chmod 600") == true)
        chmod(file, 0o600)

        var flipped = original
        flipped[40] ^= 1
        try writeFile(file, flipped)
        let corrupt = #expect(throws: StateFileError.self) { try NodeIdentity.loadOrCreate(stateDirectory: state) }
        #expect(corrupt?.description.contains("corrupt") == true)

        try writeFile(file, Array(original.prefix(50)))
        let short = #expect(throws: StateFileError.self) { try NodeIdentity.loadOrCreate(stateDirectory: state) }
        #expect(short?.description.contains("not a Parley identity file") == true)

        // Nothing was overwritten: restoring the file restores the identity.
        try writeFile(file, original)
        _ = try NodeIdentity.loadOrCreate(stateDirectory: state)

        let notADirectory = state + "/" + NodeIdentity.fileName
        #expect(throws: StateFileError.self) { try NodeIdentity.loadOrCreate(stateDirectory: notADirectory) }
    }

    /// A state directory other users may write to (they could delete `identity` or `pins` and
    /// reset trust on first use) is refused, and so are the pins in it; 0700 works again.
    @Test func aStateDirectoryOthersCanWriteIsRefused() throws {
        let directory = try TemporaryDirectory()
        let state = directory.path + "/state"
        _ = try NodeIdentity.loadOrCreate(stateDirectory: state)
        chmod(state, 0o777)
        let refusal = #expect(throws: StateFileError.self) { try NodeIdentity.loadOrCreate(stateDirectory: state) }
        #expect(
            refusal?.description
                == "state directory: \(state) is open to other users (mode 777); refusing to use it: run chmod 700 \(state)"
        )
        let file = IdentityPins.File(stateDirectory: state, roomID: Array(repeating: 7, count: 32))
        var pins = try file.load()
        try pins.pin(displayName: "alice", identityKey: Array(repeating: 1, count: 32))
        #expect(throws: StateFileError.self) { try file.save(pins) }
        chmod(state, 0o700)
        _ = try NodeIdentity.loadOrCreate(stateDirectory: state)
    }
}

/// A fresh directory under /tmp, removed (with its contents) when dropped.
final class TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/parley-protocol-test-XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else { throw FixtureError("mkdtemp failed") }
        path = String(cString: created)
    }

    deinit {
        _ = system("rm -rf '\(path)'")
    }
}

func fileMode(_ path: String) throws -> mode_t {
    var stats = stat()
    guard stat(path, &stats) == 0 else { throw FixtureError("cannot stat \(path)") }
    return stats.st_mode & 0o777
}

func readFile(_ path: String) throws -> [UInt8] {
    guard let file = fopen(path, "rb") else { throw FixtureError("cannot open \(path)") }
    defer { fclose(file) }
    var bytes = [UInt8](repeating: 0, count: 4096)
    let count = fread(&bytes, 1, bytes.count, file)
    return Array(bytes.prefix(count))
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    guard let file = fopen(path, "wb") else { throw FixtureError("cannot open \(path)") }
    defer { fclose(file) }
    _ = fwrite(bytes, 1, bytes.count, file)
}
