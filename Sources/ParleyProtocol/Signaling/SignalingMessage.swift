import ParleyCore
import Sodium

/// The messages nodes exchange through the rendezvous, inside envelopes (docs/PROTOCOL.md §6.5).
public enum SignalingMessage: Sendable, Hashable {
    /// Announces a node to the room (broadcast) or answers one (unicast).
    case hello(Hello)
    /// ICE username fragment and password for one ICE generation; sealed to the recipient.
    case iceCredentials(ICECredentials)
    /// One trickled ICE candidate; sealed to the recipient.
    case iceCandidate(generation: UInt32, candidate: String)
    /// The sender has no more candidates for this generation.
    case iceCandidatesDone(generation: UInt32)
    /// Asks the recipient to restart ICE with this new generation.
    case iceRestart(generation: UInt32)
    /// The sender leaves the meeting.
    case bye

    /// The type byte (§6.5).
    public enum Kind: UInt8, Sendable, Hashable, CaseIterable {
        case hello = 0x01
        case iceCredentials = 0x02
        case iceCandidate = 0x03
        case iceCandidatesDone = 0x04
        case iceRestart = 0x05
        case bye = 0x06

        /// Whether the body is additionally sealed to the recipient's static key (§6.3): the ICE
        /// credentials and candidates, which other members of the room must not read.
        var isSealed: Bool { self == .iceCredentials || self == .iceCandidate }
        /// Whether the message must name one recipient (everything about one ICE link).
        var isUnicastOnly: Bool { self != .hello && self != .bye }
    }

    public var kind: Kind {
        switch self {
        case .hello: .hello
        case .iceCredentials: .iceCredentials
        case .iceCandidate: .iceCandidate
        case .iceCandidatesDone: .iceCandidatesDone
        case .iceRestart: .iceRestart
        case .bye: .bye
        }
    }

    /// The body before any sealing (§6.5).
    func encodedBody() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .hello(let hello):
            writer.writeBytes(hello.identity.staticKey)
            writer.writeBytes(hello.identity.bindingSignature)
            writer.writeU64(hello.sessionEpoch)
            writer.writeU8(UInt8(hello.protocolVersions.count))
            writer.writeBytes(hello.protocolVersions)
            writer.writeU8(UInt8(hello.displayName.utf8.count))
            writer.writeBytes(hello.displayName.utf8)
        case .iceCredentials(let credentials):
            writer.writeU32(credentials.generation)
            writer.writeU8(UInt8(credentials.usernameFragment.utf8.count))
            writer.writeBytes(credentials.usernameFragment.utf8)
            writer.writeU8(UInt8(credentials.password.utf8.count))
            writer.writeBytes(credentials.password.utf8)
        case .iceCandidate(let generation, let candidate):
            writer.writeU32(generation)
            writer.writeU16(UInt16(candidate.utf8.count))
            writer.writeBytes(candidate.utf8)
        case .iceCandidatesDone(let generation), .iceRestart(let generation):
            writer.writeU32(generation)
        case .bye:
            writer.writeU8(0)
        }
        return writer.bytes
    }

    /// Parses a body of type `kind` sent by `sender` (the identity key from the envelope header).
    static func decode(kind: Kind, body: ArraySlice<UInt8>, sender: [UInt8]) throws(EnvelopeError) -> SignalingMessage {
        var reader = ByteReader(body)
        do {
            let message: SignalingMessage
            switch kind {
            case .hello:
                let staticKey = try reader.readBytes(X25519.publicKeyLength, "static key")
                let binding = try reader.readBytes(Ed25519.signatureLength, "binding signature")
                let epoch = try reader.readU64("session epoch")
                let versions = try reader.readBytes(Int(try reader.readU8("version count")), "versions")
                let name = try reader.readUTF8(Int(try reader.readU8("name length")), "display name")
                let identity: PeerIdentity
                do {
                    identity = try PeerIdentity(identityKey: sender, staticKey: staticKey, bindingSignature: binding)
                } catch {
                    throw EnvelopeError.badBinding
                }
                message = .hello(
                    try Hello(identity: identity, sessionEpoch: epoch, protocolVersions: versions, displayName: name))
            case .iceCredentials:
                let generation = try reader.readU32("ICE generation")
                let ufrag = try reader.readUTF8(Int(try reader.readU8("ufrag length")), "ufrag")
                let password = try reader.readUTF8(Int(try reader.readU8("password length")), "password")
                message = .iceCredentials(
                    try ICECredentials(generation: generation, usernameFragment: ufrag, password: password))
            case .iceCandidate:
                let generation = try reader.readU32("ICE generation")
                let candidate = try reader.readUTF8(Int(try reader.readU16("candidate length")), "candidate")
                try ICECredentials.validateCandidate(candidate)
                message = .iceCandidate(generation: generation, candidate: candidate)
            case .iceCandidatesDone:
                message = .iceCandidatesDone(generation: try reader.readU32("ICE generation"))
            case .iceRestart:
                message = .iceRestart(generation: try reader.readU32("ICE generation"))
            case .bye:
                // The reason byte is 0 (leaving) in version 1; other values are read as leaving too.
                _ = try reader.readU8("reason")
                message = .bye
            }
            try reader.expectEnd("the message body")
            return message
        } catch let error as EnvelopeError {
            throw error
        } catch {
            throw .malformed("\(kind) body: \(error)")
        }
    }
}

/// The HELLO body (§6.5.1).
public struct Hello: Sendable, Hashable {
    public static let maximumDisplayNameBytes = 64
    public static let maximumVersions = 16

    public let identity: PeerIdentity
    /// Random, non-zero, chosen at each start of the node: a new epoch means the peer restarted
    /// and every link to it starts over.
    public let sessionEpoch: UInt64
    /// Protocol versions the sender speaks, strictly ascending (version 1: `[1]`).
    public let protocolVersions: [UInt8]
    /// How the sender wants to be called; shown only once an envelope carrying it authenticated.
    public let displayName: String

    public init(
        identity: PeerIdentity, sessionEpoch: UInt64, protocolVersions: [UInt8] = [1], displayName: String
    )
        throws(EnvelopeError)
    {
        guard sessionEpoch != 0 else { throw .malformed("the session epoch must not be 0") }
        guard !protocolVersions.isEmpty, protocolVersions.count <= Self.maximumVersions,
            protocolVersions.first != 0, zip(protocolVersions, protocolVersions.dropFirst()).allSatisfy({ $0 < $1 })
        else { throw .malformed("protocol versions must be 1 to 16 distinct non-zero values in ascending order") }
        try Self.validateDisplayName(displayName)
        self.identity = identity
        self.sessionEpoch = sessionEpoch
        self.protocolVersions = protocolVersions
        self.displayName = displayName
    }

    /// What may stand next to a zero-width joiner in an emoji sequence (§6.5.1, by general
    /// category so that every implementation draws the same line): a symbol (So) above ASCII on
    /// both sides; before it also a skin tone (Sk) or the emoji presentation selector U+FE0F.
    static func isEmojiPart(_ scalar: Unicode.Scalar, before: Bool) -> Bool {
        guard scalar.value > 0x7F else { return false }
        switch scalar.properties.generalCategory {
        case .otherSymbol: return true
        case .modifierSymbol: return before
        default: return before && scalar == "\u{FE0F}"
        }
    }

    static func hex(_ scalar: Unicode.Scalar) -> String {
        let digits = String(scalar.value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// The highest version both sides list (§12), or nil if they share none.
    public func commonVersion(with other: [UInt8]) -> UInt8? {
        protocolVersions.filter(other.contains).max()
    }

    /// 1 to 64 bytes of UTF-8 without control characters, line separators or invisible format
    /// characters (Unicode category Cf: bidirectional overrides, zero-width spaces, which could make
    /// one name look like another; only the zero-width joiner inside an emoji sequence is allowed),
    /// and no leading or trailing space.
    public static func validateDisplayName(_ name: String) throws(EnvelopeError) {
        guard (1...maximumDisplayNameBytes).contains(name.utf8.count) else {
            throw .malformed("a display name must be 1 to \(maximumDisplayNameBytes) bytes of UTF-8")
        }
        let scalars = Array(name.unicodeScalars)
        for (index, scalar) in scalars.enumerated() {
            switch scalar.properties.generalCategory {
            case .control, .lineSeparator, .paragraphSeparator:
                throw .malformed("a display name must not contain control characters or line breaks")
            case .format:
                let joinsEmoji =
                    scalar == "\u{200D}" && index > 0 && index + 1 < scalars.count
                    && Self.isEmojiPart(scalars[index - 1], before: true)
                    && Self.isEmojiPart(scalars[index + 1], before: false)
                guard joinsEmoji else {
                    throw .malformed(
                        "a display name must not contain invisible format characters (U+\(Self.hex(scalar)))")
                }
            default: break
            }
        }
        guard let first = name.unicodeScalars.first, let last = name.unicodeScalars.last,
            !first.properties.isWhitespace, !last.properties.isWhitespace
        else { throw .malformed("a display name must not start or end with a space") }
    }
}

/// ICE credentials for one generation of one link (RFC 8445 §5.3; RFC 5245 §15.4 syntax).
public struct ICECredentials: Sendable, Hashable {
    public let generation: UInt32
    /// 4 to 255 ice-chars (letters, digits, `+`, `/`).
    public let usernameFragment: String
    /// 22 to 255 ice-chars.
    public let password: String

    public init(generation: UInt32, usernameFragment: String, password: String) throws(EnvelopeError) {
        guard (4...255).contains(usernameFragment.utf8.count), Self.isICEChars(usernameFragment) else {
            throw .malformed("an ICE ufrag must be 4 to 255 letters, digits, + or /")
        }
        guard (22...255).contains(password.utf8.count), Self.isICEChars(password) else {
            throw .malformed("an ICE password must be 22 to 255 letters, digits, + or /")
        }
        self.generation = generation
        self.usernameFragment = usernameFragment
        self.password = password
    }

    static func isICEChars(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0.isASCIILetterOrDigit || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "/") }
    }

    public static let maximumCandidateBytes = 512

    /// An RFC 5245 §15.1 candidate attribute value: `candidate:` then printable ASCII, at most 512
    /// bytes (without `a=` and without a line ending).
    public static func validateCandidate(_ candidate: String) throws(EnvelopeError) {
        guard candidate.utf8.count <= maximumCandidateBytes, candidate.hasPrefix("candidate:"),
            candidate.utf8.allSatisfy({ (0x20...0x7E).contains($0) })
        else { throw .malformed("an ICE candidate must be a printable \"candidate:\" line of at most 512 bytes") }
    }
}
