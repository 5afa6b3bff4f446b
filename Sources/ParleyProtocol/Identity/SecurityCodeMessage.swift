public import ParleyCore

/// COMMIT and REVEAL, the session control messages of the security code agreement
/// (docs/PROTOCOL.md §10, §11.1). Bodies after the control type byte; fields are big-endian, and
/// a longer body is accepted (fields may be appended in later versions).
///
/// ```
/// COMMIT (0x03) = view_hash[32] || round: u64 || commitment[32]                 ; 72 bytes
/// REVEAL (0x04) = view_hash[32] || round: u64 || nonce[32] || flags: u8         ; 73 bytes
///                 flags bit 0: complete (the sender holds every member's nonce for this round)
/// ```
public enum SecurityCodeMessage: Sendable, Hashable {
    case commit(Commit)
    case reveal(Reveal)

    public static let commitType: UInt8 = 0x03
    public static let revealType: UInt8 = 0x04

    public struct Commit: Sendable, Hashable {
        public static let length = 72
        public var viewHash: [UInt8]
        public var round: UInt64
        public var commitment: [UInt8]

        public init(viewHash: [UInt8], round: UInt64, commitment: [UInt8]) {
            self.viewHash = viewHash
            self.round = round
            self.commitment = commitment
        }
    }

    public struct Reveal: Sendable, Hashable {
        public static let length = 73
        static let completeFlag: UInt8 = 0x01
        public var viewHash: [UInt8]
        public var round: UInt64
        public var nonce: [UInt8]
        /// The sender holds every member's nonce for this round (it shows the code).
        public var complete: Bool

        public init(viewHash: [UInt8], round: UInt64, nonce: [UInt8], complete: Bool) {
            self.viewHash = viewHash
            self.round = round
            self.nonce = nonce
            self.complete = complete
        }
    }

    public var viewHash: [UInt8] {
        switch self {
        case .commit(let commit): commit.viewHash
        case .reveal(let reveal): reveal.viewHash
        }
    }

    public var round: UInt64 {
        switch self {
        case .commit(let commit): commit.round
        case .reveal(let reveal): reveal.round
        }
    }

    /// Whether the sender showed the code for this round when it sent this.
    public var isComplete: Bool {
        if case .reveal(let reveal) = self { reveal.complete } else { false }
    }

    /// The control type byte of this message.
    public var controlType: UInt8 {
        switch self {
        case .commit: Self.commitType
        case .reveal: Self.revealType
        }
    }

    /// `control_type || body`, as a session control payload carries it.
    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.writeU8(controlType)
        switch self {
        case .commit(let commit):
            writer.writeBytes(commit.viewHash)
            writer.writeU64(commit.round)
            writer.writeBytes(commit.commitment)
        case .reveal(let reveal):
            writer.writeBytes(reveal.viewHash)
            writer.writeU64(reveal.round)
            writer.writeBytes(reveal.nonce)
            writer.writeU8(reveal.complete ? Reveal.completeFlag : 0)
        }
        return writer.bytes
    }

    /// Parses the body of a message of `controlType` (0x03 or 0x04), whose type byte was already
    /// read; nil for another type. Throws for a body shorter than the type requires.
    public init?(controlType: UInt8, body reader: inout ByteReader) throws(WireFormatError) {
        switch controlType {
        case Self.commitType:
            self = .commit(
                Commit(
                    viewHash: try reader.readBytes(32, "COMMIT view_hash"), round: try reader.readU64("COMMIT round"),
                    commitment: try reader.readBytes(32, "COMMIT commitment")))
        case Self.revealType:
            self = .reveal(
                Reveal(
                    viewHash: try reader.readBytes(32, "REVEAL view_hash"), round: try reader.readU64("REVEAL round"),
                    nonce: try reader.readBytes(32, "REVEAL nonce"),
                    complete: try reader.readU8("REVEAL flags") & Reveal.completeFlag != 0))
        default:
            return nil
        }
    }
}
