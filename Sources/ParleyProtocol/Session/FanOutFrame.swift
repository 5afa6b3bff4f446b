import ParleyCore
import Sodium

/// A media payload signed by its sender so that a member can pass it on to the others without
/// being able to forge or replay it (docs/PROTOCOL.md §15.1):
///
/// ```
/// signed_frame = counter: u64 || signature[64] || media
/// signature    = Ed25519-Sign(identity, "parley/v4/fan-out\0" || room_id[32] || session_epoch: u64
///                                      || counter: u64 || media)
/// ```
public enum FanOutFrame {
    static let context: [UInt8] = Array("parley/v4/fan-out\0".utf8)
    /// What a signed frame adds to its media payload: the counter and the signature.
    public static let overhead = 8 + Ed25519.signatureLength
    /// A media payload is 10–1200 bytes (§9.1).
    public static let minimumLength = overhead + 10
    public static let maximumLength = overhead + 1200

    /// What both ends sign and check: the context, the room, the sender's run and the counter,
    /// then the media (`prefixLength` bytes before it).
    static let prefixLength = context.count + 32 + 8 + 8

    /// The start of every signed message of one sender's run: context, room id, epoch. The
    /// counter follows it, then the media.
    static func fixedPrefix(roomID: [UInt8], epoch: UInt64) -> [UInt8] {
        context + roomID + bigEndian(epoch)
    }

    static func bigEndian(_ value: UInt64) -> [UInt8] {
        stride(from: 56, through: 0, by: -8).map { UInt8(truncatingIfNeeded: value >> UInt64($0)) }
    }

    /// Writes what the signature of `frame` covers — `fixedPrefix`, then the frame's counter and
    /// media — into `message` (at least `prefixLength + 1200` bytes) and returns its length.
    static func signedMessage(
        of frame: UnsafeRawBufferPointer, fixedPrefix: [UInt8], into message: UnsafeMutableRawBufferPointer
    ) -> Int {
        let media = frame.count - overhead
        fixedPrefix.withUnsafeBytes { message.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        (message.baseAddress! + prefixLength - 8).copyMemory(from: frame.baseAddress!, byteCount: 8)
        if media > 0 {
            (message.baseAddress! + prefixLength).copyMemory(from: frame.baseAddress! + overhead, byteCount: media)
        }
        return prefixLength + media
    }
}

/// Signs this node's frames for fanning out (§15.1): one per run of the node, on the audio
/// capture thread. The message buffer is allocated once, so signing allocates nothing.
public struct FanOutSigner: Sendable {
    private let key: Ed25519.KeyPair
    /// The next frame's counter: 0 for the first of the session epoch.
    public private(set) var counter: UInt64 = 0
    private var message: [UInt8]
    /// The context, room and epoch as written once; the counter is rewritten per frame.
    private let fixedPrefix: [UInt8]

    public init(identity: NodeIdentity, roomID: [UInt8], epoch: UInt64) {
        self.init(identity: identity, roomID: roomID, epoch: epoch, counter: 0)
    }

    /// Starting at `counter` (known-answer vectors).
    init(identity: NodeIdentity, roomID: [UInt8], epoch: UInt64, counter: UInt64) {
        precondition(roomID.count == 32, "a room id is 32 bytes")
        self.counter = counter
        key = identity.signingKey
        message = [UInt8](repeating: 0, count: FanOutFrame.prefixLength + 1200)
        fixedPrefix = FanOutFrame.fixedPrefix(roomID: roomID, epoch: epoch)
    }

    /// Writes the signed frame of `media` (a media payload, ≤ 1200 bytes) into `frame`, whose
    /// storage is reused, and advances the counter.
    public mutating func sign(_ media: UnsafeRawBufferPointer, into frame: inout [UInt8]) {
        precondition(media.count <= 1200, "a media payload is at most 1200 bytes")
        let counter = counter
        self.counter += 1
        let fixedPrefix = fixedPrefix
        frame.removeAll(keepingCapacity: true)
        for shift in stride(from: 56, through: 0, by: -8) {
            frame.append(UInt8(truncatingIfNeeded: counter >> UInt64(shift)))
        }
        frame.append(contentsOf: repeatElement(0, count: Ed25519.signatureLength))
        frame.append(contentsOf: media)
        message.withUnsafeMutableBytes { bytes in
            frame.withUnsafeMutableBytes { out in
                let length = FanOutFrame.signedMessage(
                    of: UnsafeRawBufferPointer(out), fixedPrefix: fixedPrefix, into: bytes)
                key.sign(
                    UnsafeRawBufferPointer(rebasing: bytes[0..<length]),
                    into: UnsafeMutableRawBufferPointer(rebasing: out[8..<FanOutFrame.overhead]))
            }
        }
    }
}

/// Why a fanned-out frame was dropped (§15.2).
public enum FanOutFrameError: Error, Sendable, Hashable {
    case malformed
    case replayed
    case badSignature
}

/// Opens the signed frames of one sender that other members pass on (§15.2 steps 2–4), with the
/// replay window of that sender's run.
public struct FanOutVerifier: Sendable {
    /// Whose frames, and of which run: a receiver keeps one per sender and epoch for as long as
    /// it knows the sender, across links (a new link with the same run must not take old frames).
    public let originKey: [UInt8]
    public let epoch: UInt64
    private let fixedPrefix: [UInt8]
    private var window = ReplayWindow()
    private var message: [UInt8] = []

    public init(originKey: [UInt8], roomID: [UInt8], epoch: UInt64) {
        precondition(originKey.count == 32 && roomID.count == 32, "identity keys and room ids are 32 bytes")
        self.originKey = originKey
        self.epoch = epoch
        fixedPrefix = FanOutFrame.fixedPrefix(roomID: roomID, epoch: epoch)
    }

    /// The media payload of `frame` if it is the sender's, signed for this room and run, and not
    /// seen before; the window moves only for a frame whose signature verified.
    public mutating func open(_ frame: ArraySlice<UInt8>) -> Result<ArraySlice<UInt8>, FanOutFrameError> {
        guard (FanOutFrame.minimumLength...FanOutFrame.maximumLength).contains(frame.count) else {
            return .failure(.malformed)
        }
        let start = frame.startIndex
        let counter = frame[start..<start + 8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard window.wouldAccept(counter) else { return .failure(.replayed) }
        if message.isEmpty { message = [UInt8](repeating: 0, count: FanOutFrame.prefixLength + 1200) }
        let (fixedPrefix, originKey) = (fixedPrefix, originKey)
        let valid = message.withUnsafeMutableBytes { bytes in
            frame.withUnsafeBytes { frame in
                let length = FanOutFrame.signedMessage(of: frame, fixedPrefix: fixedPrefix, into: bytes)
                return Ed25519.isValidSignature(
                    UnsafeRawBufferPointer(rebasing: frame[8..<FanOutFrame.overhead]),
                    of: UnsafeRawBufferPointer(rebasing: bytes[0..<length]), publicKey: originKey)
            }
        }
        let media = frame[(start + FanOutFrame.overhead)...]
        guard valid else { return .failure(.badSignature) }
        _ = window.accept(counter)
        return .success(media)
    }
}
