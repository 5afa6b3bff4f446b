public import Sodium

/// Noise HandshakeState (§5.3) for `Noise_<pattern>_25519_ChaChaPoly_<hash>`: processes the
/// pattern's tokens message by message and splits into transport CipherStates at the end.
/// A plain value: each side owns one and feeds it messages in order.
public struct NoiseHandshakeState: Sendable {
    public static let dhLength = X25519.publicKeyLength

    public let pattern: NoisePattern
    public let isInitiator: Bool
    private var symmetric: NoiseSymmetricState
    private let localStatic: X25519.KeyPair?
    private var localEphemeral: X25519.KeyPair?
    /// Ephemeral key pairs to use, in order, instead of fresh random ones (test vectors only).
    private var presetEphemerals: [X25519.KeyPair]
    public private(set) var remoteStatic: [UInt8]?
    public private(set) var remoteEphemeral: [UInt8]?
    private var psks: [SecureBytes]
    private var messageIndex = 0
    private var transport: (send: NoiseCipherState, receive: NoiseCipherState)?

    /// `protocolName` is a full Noise name, e.g. `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b`.
    /// `remoteStatic` is the responder's static key for patterns that pre-know it (`<- s`);
    /// `psks` are consumed by the `psk` tokens in order (32 bytes each).
    public init(
        protocolName: String, isInitiator: Bool, prologue: some ReadableBytes, localStatic: X25519.KeyPair?,
        remoteStatic: [UInt8]?, psks: [SecureBytes] = [], presetEphemerals: [X25519.KeyPair] = []
    ) throws(NoiseError) {
        let parts = protocolName.split(separator: "_", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, parts[0] == "Noise", parts[2] == "25519", parts[3] == "ChaChaPoly" else {
            throw NoiseError("unsupported Noise protocol \(protocolName)")
        }
        guard let pattern = NoisePattern(name: parts[1]) else { throw NoiseError("unknown Noise pattern \(parts[1])") }
        guard let hash = NoiseHash.all.first(where: { $0.name == parts[4] }) else {
            throw NoiseError("unsupported Noise hash \(parts[4])")
        }
        guard psks.count == pattern.pskCount, psks.allSatisfy({ $0.count == 32 }) else {
            throw NoiseError("\(pattern.name) needs \(pattern.pskCount) pre-shared keys of 32 bytes")
        }
        self.pattern = pattern
        self.isInitiator = isInitiator
        self.localStatic = localStatic
        self.remoteStatic = remoteStatic
        self.psks = psks
        self.presetEphemerals = presetEphemerals
        symmetric = NoiseSymmetricState(protocolName: protocolName, hash: hash)
        symmetric.mixHash(prologue)
        // Pre-messages are hashed initiator's first, each side's keys as the initiator/responder.
        for (tokens, ownedByUs) in [
            (pattern.initiatorPreMessage, isInitiator), (pattern.responderPreMessage, !isInitiator),
        ] {
            for token in tokens {
                guard token == .s else { throw NoiseError("pre-message token \(token) is not supported") }
                guard let key = ownedByUs ? localStatic?.publicKey : remoteStatic else {
                    throw NoiseError("\(pattern.name) needs the \(ownedByUs ? "local" : "remote") static key up front")
                }
                symmetric.mixHash(key)
            }
        }
    }

    /// Makes the next `e` token use `ephemeral` (known-answer vectors only).
    mutating func presetEphemeral(_ ephemeral: X25519.KeyPair) {
        presetEphemerals.append(ephemeral)
    }

    /// Whether all handshake messages were processed.
    public var isComplete: Bool { transport != nil }
    /// Whether the next message is ours to write.
    public var isOurTurn: Bool { (messageIndex % 2 == 0) == isInitiator }
    /// The handshake hash `h` (channel binding; equal on both sides after the handshake).
    public var handshakeHash: [UInt8] { symmetric.handshakeHash }

    /// The transport CipherStates, once the handshake is complete.
    public var transportCiphers: (send: NoiseCipherState, receive: NoiseCipherState)? { transport }

    /// WriteMessage: the next handshake message carrying `payload`.
    public mutating func writeMessage(payload: some ReadableBytes) throws(NoiseError) -> [UInt8] {
        guard !isComplete, messageIndex < pattern.messages.count, isOurTurn else {
            throw NoiseError("not our turn to write a handshake message")
        }
        var message: [UInt8] = []
        for token in pattern.messages[messageIndex] {
            switch token {
            case .e:
                let ephemeral = presetEphemerals.isEmpty ? X25519.KeyPair.generate() : presetEphemerals.removeFirst()
                localEphemeral = ephemeral
                message += ephemeral.publicKey
                symmetric.mixHash(ephemeral.publicKey)
                if pattern.usesPSK { symmetric.mixKey(ephemeral.publicKey) }
            case .s:
                guard let localStatic else { throw NoiseError("\(pattern.name) needs a local static key") }
                message += try symmetric.encryptAndHash(localStatic.publicKey)
            case .psk:
                symmetric.mixKeyAndHash(psks.removeFirst())
            case .ee, .es, .se, .ss:
                try mixDH(token)
            }
        }
        message += try symmetric.encryptAndHash(payload)
        finishMessage()
        return message
    }

    /// ReadMessage: the payload of the peer's next handshake message. On failure the state must be
    /// discarded (Noise §5.3: it is not safe to continue a handshake after an error).
    public mutating func readMessage(_ message: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard !isComplete, messageIndex < pattern.messages.count, !isOurTurn else {
            throw NoiseError("not the peer's turn to send a handshake message")
        }
        var reader = message[...]
        func take(_ count: Int, _ what: String) throws(NoiseError) -> ArraySlice<UInt8> {
            guard reader.count >= count else { throw .truncated(what) }
            defer { reader = reader.dropFirst(count) }
            return reader.prefix(count)
        }
        for token in pattern.messages[messageIndex] {
            switch token {
            case .e:
                let ephemeral = Array(try take(Self.dhLength, "an ephemeral key"))
                remoteEphemeral = ephemeral
                symmetric.mixHash(ephemeral)
                if pattern.usesPSK { symmetric.mixKey(ephemeral) }
            case .s:
                let length = Self.dhLength + (symmetric.cipher.hasKey ? NoiseCipherState.tagLength : 0)
                remoteStatic = try symmetric.decryptAndHash(take(length, "a static key"))
            case .psk:
                symmetric.mixKeyAndHash(psks.removeFirst())
            case .ee, .es, .se, .ss:
                try mixDH(token)
            }
        }
        let payload = try symmetric.decryptAndHash(reader)
        finishMessage()
        return payload
    }

    /// MixKey(DH(...)) for a DH token, from this side's point of view (§5.3: for `es` the
    /// initiator uses its ephemeral and the responder's static; the responder the reverse).
    private mutating func mixDH(_ token: NoisePattern.Token) throws(NoiseError) {
        let initiatorUsesEphemeral = token == .ee || token == .es
        let responderUsesEphemeral = token == .ee || token == .se
        let localEphemeralSide = isInitiator ? initiatorUsesEphemeral : responderUsesEphemeral
        let remoteEphemeralSide = isInitiator ? responderUsesEphemeral : initiatorUsesEphemeral
        guard let local = localEphemeralSide ? localEphemeral : localStatic,
            let remote = remoteEphemeralSide ? remoteEphemeral : remoteStatic
        else { throw NoiseError("\(token) needs a key this side does not have") }
        do {
            symmetric.mixKey(try local.sharedSecret(with: remote))
        } catch {
            throw NoiseError("Diffie-Hellman failed: \(error)")
        }
    }

    private mutating func finishMessage() {
        messageIndex += 1
        guard messageIndex == pattern.messages.count else { return }
        let (initiatorToResponder, responderToInitiator) = symmetric.split()
        transport =
            isInitiator
            ? (initiatorToResponder, responderToInitiator) : (responderToInitiator, initiatorToResponder)
        // The ephemeral secret is not needed after the handshake (Noise §5.3 Split); dropping the
        // last reference zeroes it.
        localEphemeral = nil
    }
}
