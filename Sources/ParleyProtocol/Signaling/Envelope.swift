import ParleyCore
import Sodium

/// Who an envelope is for: every other member (broadcast) or one peer, whose verified static key
/// sealed bodies are sealed to.
public enum EnvelopeRecipient: Sendable, Hashable {
    case everyone
    case peer(PeerIdentity)

    /// The header's recipient field: the peer's identity key, or 32 zero bytes.
    var identityField: [UInt8] {
        switch self {
        case .everyone: Envelope.broadcastRecipient
        case .peer(let peer): peer.identityKey
        }
    }
}

/// An envelope that opened: who sent it (authenticated), whether it was broadcast, and the message.
public struct ReceivedEnvelope: Sendable, Hashable {
    /// The sender's identity key; its signature on the envelope verified.
    public let sender: [UInt8]
    public let isBroadcast: Bool
    public let sequence: UInt64
    public let message: SignalingMessage
}

/// Signaling envelopes (docs/PROTOCOL.md §6): the payloads of rendezvous SEND/DELIVER.
///
/// ```
/// envelope  = version: u8 (1) || nonce[24] || XChaCha20-Poly1305(signaling_key, nonce, ad, plaintext)
/// ad        = "parley/v1/envelope\0" || version || room_id[32]
/// plaintext = type: u8 || sender[32] || recipient[32] || sequence: u64 || signature[64]
///             || body_length: u16 || body || zero padding to 512, 1024, 2048 or 4096 bytes
/// signature = Ed25519(sender, "parley/v1/envelope-signature\0" || room_id || type || sender
///             || recipient || sequence || body)
/// ```
/// Everything but the version and nonce is encrypted, so the rendezvous sees neither identities
/// nor message types; the signature lets each member check who sent what, which the shared
/// signaling key alone cannot.
public enum Envelope {
    public static let version: UInt8 = 1
    public static let nonceLength = XChaCha20Poly1305.nonceLength
    static let headerLength = 1 + 32 + 32 + 8 + Ed25519.signatureLength + 2
    /// Plaintext sizes envelopes are padded to (§6.2), so sizes say little about contents.
    public static let paddingBuckets = [512, 1024, 2048, 4096]
    public static let maximumBodyLength = paddingBuckets.last! - headerLength
    static let minimumLength = 1 + nonceLength + headerLength + XChaCha20Poly1305.tagLength
    public static let maximumLength = 1 + nonceLength + paddingBuckets.last! + XChaCha20Poly1305.tagLength
    static let broadcastRecipient = [UInt8](repeating: 0, count: 32)
    static let associatedDataContext: [UInt8] = Array("parley/v1/envelope\0".utf8)
    static let signatureContext: [UInt8] = Array("parley/v1/envelope-signature\0".utf8)

    /// Seals `message` from `sender` to `recipient` with sequence number `sequence` (§6.4: strictly
    /// increasing per sender; use an `EnvelopeSequencer`).
    public static func seal(
        _ message: SignalingMessage, to recipient: EnvelopeRecipient, from sender: NodeIdentity, sequence: UInt64,
        keys: RoomKeys
    ) throws(EnvelopeError) -> [UInt8] {
        try seal(
            message, to: recipient, from: sender, sequence: sequence, keys: keys,
            nonce: RandomBytes.bytes(count: nonceLength))
    }

    /// `seal` with a given nonce (known-answer vectors; never reuse a nonce).
    static func seal(
        _ message: SignalingMessage, to recipient: EnvelopeRecipient, from sender: NodeIdentity, sequence: UInt64,
        keys: RoomKeys, nonce: [UInt8]
    ) throws(EnvelopeError) -> [UInt8] {
        let kind = message.kind
        if case .hello(let hello) = message, hello.identity != sender.peerIdentity {
            throw .needsRecipient("a HELLO must carry the sender's own identity")
        }
        var body = message.encodedBody()
        if kind.isUnicastOnly || kind.isSealed {
            guard case .peer(let peer) = recipient else {
                throw .needsRecipient("a \(kind) message must be sent to one peer, not broadcast")
            }
            if kind.isSealed {
                // The sender's identity inside the sealed box binds it to this sender (§6.3).
                // A verified peer's static key is 32 bytes, so sealing cannot fail.
                body = try! SealedBox.seal(sender.publicKey + body, to: peer.staticKey)
            }
        }
        guard body.count <= maximumBodyLength else { throw .bodyTooLarge(body.count) }
        let recipientField = recipient.identityField
        let signature = sender.sign(
            signedBytes(
                roomID: keys.roomID, kind: kind.rawValue, sender: sender.publicKey, recipient: recipientField,
                sequence: sequence, body: body))
        let plaintext = Plaintext.encode(
            type: kind.rawValue, sender: sender.publicKey, recipient: recipientField, sequence: sequence,
            signature: signature, body: body)
        return encrypt(plaintext, keys: keys, nonce: nonce)
    }

    /// `version || nonce || XChaCha20-Poly1305(plaintext)` under the room's signaling key.
    static func encrypt(_ plaintext: [UInt8], keys: RoomKeys, nonce: [UInt8]) -> [UInt8] {
        // The signaling key is 32 bytes and the nonce 24, so encryption cannot fail.
        let ciphertext = try! XChaCha20Poly1305.seal(
            plaintext, associatedData: associatedData(roomID: keys.roomID), nonce: nonce, key: keys.signalingKey)
        return [version] + nonce + ciphertext
    }

    /// Opens an envelope addressed to `recipient` (or broadcast), checking, in order: size and
    /// version, decryption under the room's signaling key, header and padding, addressing, the
    /// sender's signature, the replay guard, the type, the sealed body and the body's syntax.
    public static func open(
        _ envelope: [UInt8], as recipient: NodeIdentity, keys: RoomKeys, replayGuard: inout EnvelopeReplayGuard
    ) throws(EnvelopeError) -> ReceivedEnvelope {
        let plaintext = try decrypt(envelope, keys: keys)
        let parsed = try Plaintext(parsing: plaintext)
        let isBroadcast = parsed.recipient == broadcastRecipient
        guard isBroadcast || parsed.recipient == recipient.publicKey else { throw .notForUs }
        guard parsed.sender != recipient.publicKey else { throw .fromOurselves }
        let signed = signedBytes(
            roomID: keys.roomID, kind: parsed.type, sender: parsed.sender, recipient: parsed.recipient,
            sequence: parsed.sequence, body: parsed.body)
        guard Ed25519.isValidSignature(parsed.signature, of: signed, publicKey: parsed.sender) else {
            throw .badSignature
        }
        guard let kind = SignalingMessage.Kind(rawValue: parsed.type) else {
            // Recorded only for a sender already heard from: unknown types from fresh identities
            // must not push known senders out of the guard (§6.4 step 6).
            if replayGuard.hasWindow(for: parsed.sender) {
                guard replayGuard.accept(sender: parsed.sender, sequence: parsed.sequence) else { throw .replayed }
            }
            throw .unknownType(parsed.type)
        }
        guard replayGuard.accept(sender: parsed.sender, sequence: parsed.sequence) else { throw .replayed }
        var body = parsed.body
        if kind.isUnicastOnly, isBroadcast {
            throw .malformed("a \(kind) message was broadcast")
        }
        if kind.isSealed {
            let opened: [UInt8]
            do {
                opened = try SealedBox.open(body, with: recipient.staticKey)
            } catch {
                throw .malformed("the sealed body does not open with our static key")
            }
            guard opened.count >= 32, Array(opened.prefix(32)) == parsed.sender else {
                throw .malformed("the sealed body names another sender")
            }
            body = opened.dropFirst(32)
        }
        let message = try SignalingMessage.decode(kind: kind, body: body, sender: parsed.sender)
        return ReceivedEnvelope(
            sender: parsed.sender, isBroadcast: isBroadcast, sequence: parsed.sequence, message: message)
    }

    static func decrypt(_ envelope: [UInt8], keys: RoomKeys) throws(EnvelopeError) -> [UInt8] {
        guard envelope.count >= minimumLength, envelope.count <= maximumLength else {
            throw .malformed("\(envelope.count) bytes is not an envelope size")
        }
        guard envelope[0] == version else { throw .unsupportedVersion(envelope[0]) }
        do {
            return try XChaCha20Poly1305.open(
                envelope[(1 + nonceLength)...], associatedData: associatedData(roomID: keys.roomID),
                nonce: envelope[1..<(1 + nonceLength)], key: keys.signalingKey)
        } catch {
            throw .authenticationFailed
        }
    }

    static func associatedData(roomID: [UInt8]) -> [UInt8] { associatedDataContext + [version] + roomID }

    static func signedBytes(
        roomID: [UInt8], kind: UInt8, sender: [UInt8], recipient: [UInt8], sequence: UInt64,
        body: some Collection<UInt8>
    ) -> [UInt8] {
        signatureContext + roomID + [kind] + sender + recipient + sequence.bigEndianBytes + body
    }

    /// The decrypted plaintext's fields (§6.2).
    struct Plaintext {
        let type: UInt8
        let sender: [UInt8]
        let recipient: [UInt8]
        let sequence: UInt64
        let signature: [UInt8]
        let body: ArraySlice<UInt8>

        /// The plaintext of §6.2, padded with zeros to the smallest bucket that holds it.
        static func encode(
            type: UInt8, sender: [UInt8], recipient: [UInt8], sequence: UInt64, signature: [UInt8], body: [UInt8]
        ) -> [UInt8] {
            let length = paddingBuckets.first { $0 >= headerLength + body.count } ?? headerLength + body.count
            var writer = ByteWriter(capacity: length)
            writer.writeU8(type)
            writer.writeBytes(sender)
            writer.writeBytes(recipient)
            writer.writeU64(sequence)
            writer.writeBytes(signature)
            writer.writeU16(UInt16(body.count))
            writer.writeBytes(body)
            writer.writeZeros(length - writer.bytes.count)
            return writer.bytes
        }

        init(parsing plaintext: [UInt8]) throws(EnvelopeError) {
            var reader = ByteReader(plaintext)
            do {
                type = try reader.readU8("type")
                sender = try reader.readBytes(32, "sender")
                recipient = try reader.readBytes(32, "recipient")
                sequence = try reader.readU64("sequence")
                signature = try reader.readBytes(Ed25519.signatureLength, "signature")
                body = try reader.readSlice(Int(try reader.readU16("body length")), "body")
            } catch {
                throw .malformed("\(error)")
            }
            guard reader.readRest().allSatisfy({ $0 == 0 }) else { throw .malformed("padding is not zero") }
        }
    }
}

/// Remembers, per sender, which envelope sequence numbers were seen (§6.4): a 64-wide RFC 6479
/// window each, so envelopes reordered by a little are still accepted and none is accepted twice.
/// The windows of the meeting's members (`keep`) stay for as long as they are members: a replayed
/// HELLO of a member that has since restarted would otherwise end its live link once a flood of
/// fresh identities had pushed its window out. Of the other senders it holds at most
/// `maximumSenders`, forgetting the one heard from least recently.
public struct EnvelopeReplayGuard: Sendable {
    public static let maximumSenders = 256
    static let windowBlocks = 2

    private var windows: [[UInt8]: (window: ReplayWindow, lastUse: UInt64)] = [:]
    private var kept: [[UInt8]: ReplayWindow] = [:]
    private var uses: UInt64 = 0

    public init() {}

    /// Whether `sender` has a window (a member's, or one of the recently heard).
    public func hasWindow(for sender: [UInt8]) -> Bool {
        kept[sender] != nil || windows[sender] != nil
    }

    /// Records `sequence` from `sender`; false if it was seen or is too far behind.
    public mutating func accept(sender: [UInt8], sequence: UInt64) -> Bool {
        if var window = kept[sender] {
            guard window.accept(sequence) else { return false }
            kept[sender] = window
            return true
        }
        var window = windows[sender]?.window ?? ReplayWindow(blockCount: Self.windowBlocks)
        guard window.accept(sequence) else { return false }
        store(window, for: sender)
        return true
    }

    /// Stores an ordinary window as the most recently used, forgetting the stalest when full.
    private mutating func store(_ window: ReplayWindow, for sender: [UInt8]) {
        uses += 1
        if windows[sender] == nil, windows.count >= Self.maximumSenders,
            let stalest = windows.min(by: { $0.value.lastUse < $1.value.lastUse })?.key
        {
            windows[stalest] = nil
        }
        windows[sender] = (window, uses)
    }

    /// `sender` is a member of the meeting: its window is never evicted until `release`.
    public mutating func keep(_ sender: [UInt8]) {
        guard kept[sender] == nil else { return }
        kept[sender] = windows.removeValue(forKey: sender)?.window ?? ReplayWindow(blockCount: Self.windowBlocks)
    }

    /// `sender` left the meeting: its window becomes an ordinary, evictable one.
    public mutating func release(_ sender: [UInt8]) {
        guard let window = kept.removeValue(forKey: sender) else { return }
        store(window, for: sender)
    }
}

/// Envelope sequence numbers for one node (§6.4): the wall clock in microseconds at start, then
/// +1 per envelope, so they keep increasing across restarts of the node as long as its clock does.
public struct EnvelopeSequencer: Sendable {
    private var next: UInt64

    public init(start: UInt64 = WallClock.system.unixNanoseconds() / 1000) {
        next = start
    }

    public mutating func nextSequence() -> UInt64 {
        defer { next += 1 }
        return next
    }
}
