import ParleyCore
import Sodium

/// One handshake's transport keys with their indices, counters and replay window (§8.4–8.5).
/// The keys live in `SecureBytes`, so they are zeroed when the last copy of the keypair is dropped.
struct TransportKeypair: Sendable {
    let localIndex: UInt32
    let remoteIndex: UInt32
    let sendKey: SecureBytes
    let receiveKey: SecureBytes
    /// Whether we initiated the handshake that made it (the initiator rekeys it, §8.6).
    let isInitiator: Bool
    let createdAt: Instant
    var sendCounter: UInt64 = 0
    private(set) var replayWindow = ReplayWindow(limit: SessionTimers.rejectAfterMessages)

    init(
        localIndex: UInt32, remoteIndex: UInt32, keys: TransportKeys, isInitiator: Bool,
        createdAt: Instant
    ) {
        self.localIndex = localIndex
        self.remoteIndex = remoteIndex
        sendKey = keys.send
        receiveKey = keys.receive
        self.isInitiator = isInitiator
        self.createdAt = createdAt
    }

    func age(at now: Instant) -> Duration { now - createdAt }
    func isExpired(at now: Instant) -> Bool { age(at: now) >= SessionTimers.rejectAfterTime }
    var canSend: Bool { sendCounter < SessionTimers.rejectAfterMessages }

    /// Writes the transport packet `header || ChaCha20-Poly1305(inner_type || body)` into
    /// `packet`, reusing its storage: no allocation once `packet` has grown to the packet size.
    mutating func seal(innerType: UInt8, body: some ReadableBytes, into packet: inout [UInt8]) {
        precondition(canSend, "transport counter exhausted")
        let counter = sendCounter
        sendCounter += 1
        packet.removeAll(keepingCapacity: true)
        TransportHeader(receiverIndex: remoteIndex, counter: counter).write(into: &packet)
        packet.append(innerType)
        body.withUnsafeBytes { packet.append(contentsOf: $0) }
        for _ in 0..<ChaCha20Poly1305.tagLength { packet.append(0) }
        Self.withNonce(counter) { nonce in
            packet.withUnsafeMutableBytes { buffer in
                // Key and nonce lengths are fixed and the buffer holds header and tag: cannot fail.
                try! ChaCha20Poly1305.sealInPlace(
                    buffer, associatedDataLength: TransportHeader.length, nonce: nonce, key: sendKey)
            }
        }
    }

    /// Decrypts `packet` in place; true if it authenticated (the plaintext is then
    /// `packet[16 ..< count − 16]`). Does not touch the replay window.
    func open(_ packet: inout [UInt8], counter: UInt64) -> Bool {
        Self.withNonce(counter) { nonce in
            packet.withUnsafeMutableBytes { buffer in
                (try? ChaCha20Poly1305.openInPlace(
                    buffer, associatedDataLength: TransportHeader.length, nonce: nonce, key: receiveKey)) != nil
            }
        }
    }

    /// Records a counter that authenticated; false if it is a replay (§8.4).
    mutating func acceptCounter(_ counter: UInt64) -> Bool { replayWindow.accept(counter) }

    /// The Noise ChaChaPoly nonce (§8.2): 4 zero bytes, then the counter little-endian, on the stack.
    private static func withNonce<R>(_ counter: UInt64, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        withUnsafeTemporaryAllocation(byteCount: ChaCha20Poly1305.nonceLength, alignment: 1) { nonce in
            nonce.storeBytes(of: 0, toByteOffset: 0, as: UInt32.self)
            nonce.storeBytes(of: counter.littleEndian, toByteOffset: 4, as: UInt64.self)
            return body(UnsafeRawBufferPointer(nonce))
        }
    }
}

/// The timing and limits of sessions (§8.6), WireGuard's values.
public enum SessionTimers {
    /// The initiator of the current keys starts a new handshake when they are this old.
    public static let rekeyAfterTime: Duration = .seconds(120)
    /// Keys this old are neither used nor accepted, and are zeroed.
    public static let rejectAfterTime: Duration = .seconds(180)
    /// The responder of the current keys starts a handshake itself when they are this old
    /// (reject − keepalive − rekey timeout), in case the initiator is not rekeying.
    public static let responderRekeyAfterTime: Duration = .seconds(165)
    /// An unanswered initiation is resent (with a new ephemeral) after this long.
    public static let rekeyTimeout: Duration = .seconds(5)
    /// … except the first initiation after the path came up, resent after this long: the peer's
    /// end of a path ICE just found may not have been ready for it (§7.5).
    public static let firstRetryAfterPathUp: Duration = .milliseconds(500)
    /// A handshake attempt gives up after this long without an answer.
    public static let rekeyAttemptTime: Duration = .seconds(90)
    /// After receiving data and sending nothing for this long, a keepalive is sent.
    public static let keepaliveTimeout: Duration = .seconds(10)
    /// Initiations from the peer arriving closer together than this are dropped (flood guard).
    public static let minimumInitiationInterval: Duration = .milliseconds(20)
    /// Initiations that may reach the Diffie-Hellman step (§7.3): a burst of this many, then
    /// `initiationsPerSecond`. A peer sends one every REKEY_TIMEOUT at most while retrying, so
    /// this only ever holds back a flood (replayed or forged by a member, who knows the MAC key).
    public static let initiationBurst = 5.0
    public static let initiationsPerSecond = 1.0
    /// How many processed initiations a responder remembers, to drop an identical copy (a replay)
    /// before any Diffie-Hellman.
    public static let rememberedInitiations = 256
    /// The initiator rekeys after sending this many packets with one key.
    public static let rekeyAfterMessages: UInt64 = 1 << 60
    /// No key sends or accepts a counter at or above this.
    public static let rejectAfterMessages: UInt64 = UInt64.max - (1 << 13)
}
