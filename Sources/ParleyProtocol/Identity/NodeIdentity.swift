import ParleyCore
public import Sodium

/// This node's long-term identity (docs/PROTOCOL.md §5): an Ed25519 key whose public key *is* the
/// node's identity, and an X25519 static key for the Noise handshake, bound to the identity by a
/// signature. Created on first run and kept in the state directory.
public struct NodeIdentity: Sendable {
    /// The file in the state directory.
    public static let fileName = "identity"
    static let fileMagic: [UInt8] = Array("parley-identity\0".utf8)
    static let fileVersion: UInt8 = 1
    static let fileChecksumLength = 16

    let signingKey: Ed25519.KeyPair
    let staticKey: X25519.KeyPair
    /// What peers learn about this node: identity key, static key and the binding signature.
    public let peerIdentity: PeerIdentity

    /// The identity public key (32 bytes).
    public var publicKey: [UInt8] { signingKey.publicKey }

    /// The identity made of an Ed25519 seed and an X25519 secret (32 bytes each).
    public init(identitySeed: SecureBytes, staticSecret: SecureBytes) throws(SodiumError) {
        signingKey = try Ed25519.KeyPair(seed: identitySeed)
        staticKey = try X25519.KeyPair(secretKey: staticSecret)
        let binding = signingKey.sign(
            PeerIdentity.bindingMessage(identity: signingKey.publicKey, static: staticKey.publicKey))
        // The signature was just made with this key, so it verifies.
        peerIdentity = try! PeerIdentity(
            identityKey: signingKey.publicKey, staticKey: staticKey.publicKey, bindingSignature: binding)
    }

    /// A fresh random identity.
    public static func generate() -> NodeIdentity {
        // Random seeds of the right length cannot fail.
        try! NodeIdentity(
            identitySeed: .random(count: Ed25519.seedLength), staticSecret: .random(count: X25519.secretKeyLength))
    }

    /// Signs `message` with the identity key (envelopes, §6.3).
    func sign(_ message: some ReadableBytes) -> [UInt8] { signingKey.sign(message) }

    // MARK: The identity file (§5.2)

    /// Loads the identity from `<stateDirectory>/identity`, or creates it (mode 0600, directory
    /// 0700) if there is none. Throws a readable error for a file that is corrupt or that other
    /// users could read.
    public static func loadOrCreate(stateDirectory: String) throws(StateFileError) -> NodeIdentity {
        try PrivateFile.ensureDirectory(stateDirectory)
        let path = stateDirectory + "/" + fileName
        if let contents = try PrivateFile.read(path) { return try decodeFile(contents, path: path) }
        let identity = generate()
        if try PrivateFile.write(identity.fileContents(), to: path, onlyIfAbsent: true) { return identity }
        // Another process created it between our read and write: use theirs.
        guard let contents = try PrivateFile.read(path) else {
            throw StateFileError("\(path) vanished while creating it")
        }
        return try decodeFile(contents, path: path)
    }

    /// `magic[16] || version u8 || ed25519_seed[32] || x25519_secret[32] || check[16]`, where
    /// `check` is BLAKE2b-128 of everything before it.
    func fileContents() -> SecureBytes {
        var contents = SecureBytes(zeroedCount: Self.fileMagic.count + 1 + 64 + Self.fileChecksumLength)
        let seed = signingKey.seed
        contents.withUnsafeMutableBytes { buffer in
            var offset = 0
            func append(_ bytes: UnsafeRawBufferPointer) {
                UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + bytes.count]).copyMemory(from: bytes)
                offset += bytes.count
            }
            Self.fileMagic.withUnsafeBytes(append)
            [Self.fileVersion].withUnsafeBytes(append)
            seed.withUnsafeBytes(append)
            staticKey.secretKey.withUnsafeBytes(append)
            Self.fileCheck(UnsafeRawBufferPointer(rebasing: buffer[0..<offset])).withUnsafeBytes(append)
        }
        return contents
    }

    static func fileCheck(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        // 16 is a valid BLAKE2b output length, so this cannot throw.
        try! BLAKE2b.hash(bytes, outputLength: fileChecksumLength)
    }

    static func decodeFile(_ contents: SecureBytes, path: String) throws(StateFileError) -> NodeIdentity {
        let expectedLength = fileMagic.count + 1 + 64 + fileChecksumLength
        let result: Result<NodeIdentity, StateFileError> = contents.withUnsafeBytes { bytes in
            guard bytes.count == expectedLength, Array(bytes[0..<fileMagic.count]) == fileMagic else {
                return .failure(StateFileError("\(path) is not a Parley identity file (wrong size or header)"))
            }
            guard bytes[fileMagic.count] == fileVersion else {
                return .failure(
                    StateFileError("\(path) is an identity file of an unknown version \(bytes[fileMagic.count])"))
            }
            let body = UnsafeRawBufferPointer(rebasing: bytes[0..<(expectedLength - fileChecksumLength)])
            guard Sodium.constantTimeEqual(fileCheck(body), UnsafeRawBufferPointer(rebasing: bytes[body.count...]))
            else {
                return .failure(
                    StateFileError(
                        "\(path) is corrupt (its checksum does not match); restore it from a backup or delete it to get a new identity"
                    ))
            }
            let seedStart = fileMagic.count + 1
            let seed = SecureBytes(copying: UnsafeRawBufferPointer(rebasing: bytes[seedStart..<seedStart + 32]))
            let secret = SecureBytes(copying: UnsafeRawBufferPointer(rebasing: bytes[seedStart + 32..<seedStart + 64]))
            // Both are 32 bytes, so this cannot fail.
            return .success(try! NodeIdentity(identitySeed: seed, staticSecret: secret))
        }
        return try result.get()
    }
}

/// A node's public identity as other nodes see it (§5.1): identity key, X25519 static key, and the
/// signature binding them. Only constructed after the signature verified.
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
    static let bindingContext: [UInt8] = Array("parley/v1/x25519-binding\0".utf8)

    /// Ed25519 public key: who this is.
    public let identityKey: [UInt8]
    /// X25519 public key the Noise handshake authenticates.
    public let staticKey: [UInt8]
    public let bindingSignature: [UInt8]

    /// Verifies the binding; throws `invalidSignature` if it does not hold (or a length is wrong).
    public init(identityKey: [UInt8], staticKey: [UInt8], bindingSignature: [UInt8]) throws(SodiumError) {
        guard identityKey.count == Ed25519.publicKeyLength, staticKey.count == X25519.publicKeyLength,
            Ed25519.isValidSignature(
                bindingSignature, of: Self.bindingMessage(identity: identityKey, static: staticKey),
                publicKey: identityKey)
        else { throw .invalidSignature }
        self.identityKey = identityKey
        self.staticKey = staticKey
        self.bindingSignature = bindingSignature
    }

    /// `"parley/v1/x25519-binding\0" || identity[32] || static[32]`.
    static func bindingMessage(identity: [UInt8], static staticKey: [UInt8]) -> [UInt8] {
        bindingContext + identity + staticKey
    }

    /// The first 8 bytes of the identity key in hex, for logs and the UI.
    public var shortID: String { hexString(identityKey.prefix(8)) }

    public var description: String { "PeerIdentity(\(shortID)…)" }
}
