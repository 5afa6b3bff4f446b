import ParleyCore
public import Sodium

/// A meeting invite (docs/PROTOCOL.md §2): the room secret, the rendezvous to meet at (with an
/// optional TLS pin) and optional TURN hints, as one copy-paste-safe string
/// `parley1:<base32 of the binary invite>`. Whoever holds the string can join the meeting, so it
/// is never logged: `description` shows everything but the secret.
public struct Invite: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public static let prefix = "parley1:"
    public static let roomSecretLength = 32
    public static let tlsPinLength = 32
    public static let checksumLength = 4
    public static let maximumTURNHints = 4
    /// Upper bound on the binary invite, so a pasted novel is refused before it is decoded.
    public static let maximumByteCount = 1024

    /// The field tags of §2.2. Tags below 0x80 must be understood; 0x80 and above may be skipped.
    enum Tag: UInt8 {
        case rendezvousURL = 0x01
        case tlsPin = 0x02
        case turnHint = 0x03
    }

    /// 32 random bytes; everything else in the meeting's key schedule derives from it (§3).
    public let roomSecret: SecureBytes
    public let rendezvous: RendezvousURL
    /// SHA-256 of the DER SubjectPublicKeyInfo of the rendezvous' leaf certificate (wss only).
    public let tlsPin: [UInt8]?
    public let turnHints: [TURNHint]

    public init(
        roomSecret: SecureBytes, rendezvous: RendezvousURL, tlsPin: [UInt8]? = nil, turnHints: [TURNHint] = []
    ) throws(InviteError) {
        guard roomSecret.count == Self.roomSecretLength else {
            throw .malformed("the room secret must be \(Self.roomSecretLength) bytes")
        }
        if let tlsPin {
            guard tlsPin.count == Self.tlsPinLength else { throw .badTLSPin(length: tlsPin.count) }
            guard rendezvous.usesTLS else { throw .pinWithoutTLS }
        }
        guard turnHints.count <= Self.maximumTURNHints else {
            throw .badTURNHint("at most \(Self.maximumTURNHints) TURN hints")
        }
        self.roomSecret = roomSecret
        self.rendezvous = rendezvous
        self.tlsPin = tlsPin
        self.turnHints = turnHints
        let length = Self.binaryLength(fields: encodedFields())
        guard length <= Self.maximumByteCount else { throw .tooLong(bytes: length) }
    }

    /// A new invite with a fresh random room secret: a new meeting.
    public static func mint(
        rendezvous: RendezvousURL, tlsPin: [UInt8]? = nil, turnHints: [TURNHint] = []
    ) throws(InviteError) -> Invite {
        try Invite(
            roomSecret: .random(count: roomSecretLength), rendezvous: rendezvous, tlsPin: tlsPin, turnHints: turnHints)
    }

    /// The invite string, `parley1:` and lowercase base32. Secret: show it only to the user.
    /// Every step before it runs in memory that is zeroed when freed; the String itself cannot be
    /// (Swift gives no way to wipe one), so ask for it only to show or pass it on.
    public var string: String {
        let binary = encodedBytes()
        var characters = SecureBytes(zeroedCount: Base32.encodedLength(byteCount: binary.count))
        characters.withUnsafeMutableBytes { output in binary.withUnsafeBytes { Base32.encode($0, into: output) } }
        let prefix = Array(Self.prefix.utf8)
        return characters.withUnsafeBytes { characters in
            String(unsafeUninitializedCapacity: prefix.count + characters.count) { text in
                _ = text.initialize(fromContentsOf: prefix)
                UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: text[prefix.count...])).copyMemory(
                    from: characters)
                return prefix.count + characters.count
            }
        }
    }

    /// Everything but the secret.
    public var debugDescription: String { description }

    public var description: String {
        var parts = ["rendezvous \(rendezvous)"]
        if tlsPin != nil { parts.append("TLS pin") }
        parts += turnHints.map { "TURN \($0)" }
        return "Invite(\(parts.joined(separator: ", ")), room secret redacted)"
    }

    public static func == (lhs: Invite, rhs: Invite) -> Bool {
        lhs.roomSecret == rhs.roomSecret && lhs.rendezvous == rhs.rendezvous && lhs.tlsPin == rhs.tlsPin
            && lhs.turnHints == rhs.turnHints
    }

    // MARK: Binary form (§2.2)

    /// `length: u16 || room_secret[32] || fields || checksum[4]`, in memory that is zeroed when
    /// freed (it holds the room secret).
    func encodedBytes() -> SecureBytes {
        let fields = encodedFields()
        let length = Self.binaryLength(fields: fields)
        var binary = SecureBytes(zeroedCount: length)
        binary.withUnsafeMutableBytes { output in
            output[0] = UInt8(truncatingIfNeeded: length >> 8)
            output[1] = UInt8(truncatingIfNeeded: length)
            roomSecret.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: output[2..<34]).copyMemory(from: $0) }
            fields.withUnsafeBytes {
                UnsafeMutableRawBufferPointer(rebasing: output[34..<(34 + fields.count)]).copyMemory(from: $0)
            }
            let checksum = Self.checksum(UnsafeRawBufferPointer(rebasing: output[0..<(length - Self.checksumLength)]))
            checksum.withUnsafeBytes {
                UnsafeMutableRawBufferPointer(rebasing: output[(length - Self.checksumLength)...]).copyMemory(from: $0)
            }
        }
        return binary
    }

    /// The fields after the room secret (none of them secret).
    private func encodedFields() -> [UInt8] {
        var fields = ByteWriter()
        func field(_ tag: Tag, _ value: [UInt8]) {
            fields.writeU8(tag.rawValue)
            fields.writeU8(UInt8(value.count))
            fields.writeBytes(value)
        }
        field(.rendezvousURL, Array(rendezvous.description.utf8))
        if let tlsPin { field(.tlsPin, tlsPin) }
        for hint in turnHints {
            var value = ByteWriter()
            for text in [hint.uri, hint.username, hint.password] {
                value.writeU8(UInt8(text.utf8.count))
                value.writeBytes(text.utf8)
            }
            field(.turnHint, value.bytes)
        }
        return fields.bytes
    }

    private static func binaryLength(fields: [UInt8]) -> Int { 2 + roomSecretLength + fields.count + checksumLength }

    /// The first 4 bytes of BLAKE2b-256 (unkeyed) of everything before the checksum.
    static func checksum(_ bytes: some ReadableBytes) -> [UInt8] {
        // 32 is a valid BLAKE2b output length and no key is given, so this cannot throw.
        Array(try! BLAKE2b.hash(bytes, outputLength: 32).prefix(checksumLength))
    }

    // MARK: Parsing (§2.1)

    /// Parses an invite as pasted: whitespace and invisible characters anywhere are ignored, as
    /// are quotes or angle brackets around it, and the prefix may be in any case. Every refusal
    /// says what is wrong.
    public init(parsing text: String) throws(InviteError) {
        let compact = Self.compact(text)
        guard !compact.isEmpty else { throw .empty }
        guard let colon = compact.firstIndex(of: ":") else { throw .notAnInvite }
        let scheme = compact[..<colon].lowercased()
        guard scheme.hasPrefix("parley") else { throw .notAnInvite }
        let version = scheme.dropFirst("parley".count)
        guard version == "1" else {
            throw version.isEmpty || !version.allSatisfy(\.isNumber)
                ? .notAnInvite : .unsupportedVersion(String(version))
        }
        let body = compact[compact.index(after: colon)...]
        let bytes = try Self.decodeBody(body)
        try self.init(binary: bytes)
    }

    /// Removes what chat apps and editors add around and inside a pasted invite (§2.1).
    static func compact(_ text: String) -> String {
        let invisible: Set<Unicode.Scalar> = ["\u{200B}", "\u{200C}", "\u{200D}", "\u{2060}", "\u{FEFF}", "\u{00AD}"]
        var scalars = String.UnicodeScalarView()
        scalars.append(
            contentsOf: text.unicodeScalars.filter { !$0.properties.isWhitespace && !invisible.contains($0) })
        let wrappers: Set<Unicode.Scalar> = [
            "\"", "'", "`", "<", ">", "\u{2018}", "\u{2019}", "\u{201C}", "\u{201D}", "«", "»",
        ]
        var view = Substring.UnicodeScalarView(scalars)
        while let first = view.first, wrappers.contains(first) { view.removeFirst() }
        while let last = view.last, wrappers.contains(last) { view.removeLast() }
        return String(String.UnicodeScalarView(view))
    }

    /// Base32 body → binary invite, telling a cut-off invite, a pasted-on tail and a typo apart
    /// by the length the invite declares in its first two bytes. The characters and bytes are
    /// kept in memory that is zeroed when freed.
    private static func decodeBody(_ body: Substring) throws(InviteError) -> SecureBytes {
        for (offset, character) in body.enumerated() {
            guard let ascii = character.asciiValue, Base32.value(of: ascii) != nil else {
                throw .invalidCharacter(character, position: offset + 1)
            }
        }
        // Every character is one ASCII byte now.
        var characters = SecureBytes(zeroedCount: body.utf8.count)
        characters.withUnsafeMutableBytes { output in
            for (index, byte) in body.utf8.enumerated() { output[index] = byte }
        }
        let count = characters.count
        // Four characters carry the 16-bit length (20 bits).
        guard count >= 4 else { throw .truncated(characters: count, expected: Base32.encodedLength(byteCount: 40)) }
        var head: [UInt8] = [0, 0]
        _ = characters.withUnsafeBytes { input in
            head.withUnsafeMutableBytes { Base32.decode(UnsafeRawBufferPointer(rebasing: input[0..<4]), into: $0) }
        }
        let declared = Int(head[0]) << 8 | Int(head[1])
        let minimum = 2 + roomSecretLength + checksumLength
        guard declared >= minimum, declared <= maximumByteCount else { throw .checksumMismatch }
        let expected = Base32.encodedLength(byteCount: declared)
        guard count >= expected else { throw .truncated(characters: count, expected: expected) }
        guard count == expected else { throw .extraCharacters(count: count - expected, expected: expected) }
        var bytes = SecureBytes(zeroedCount: count * 5 / 8)
        _ = bytes.withUnsafeMutableBytes { output in characters.withUnsafeBytes { Base32.decode($0, into: output) } }
        guard bytes.count == declared else { throw .checksumMismatch }
        let matches = bytes.withUnsafeBytes { all in
            Sodium.constantTimeEqual(
                checksum(UnsafeRawBufferPointer(rebasing: all[..<(declared - checksumLength)])),
                Array(all[(declared - checksumLength)...]))
        }
        guard matches else { throw .checksumMismatch }
        return bytes
    }

    /// Parses the fields of a binary invite whose length and checksum were already verified. The
    /// room secret goes straight into `SecureBytes`; only the fields after it are copied.
    init(binary: some ReadableBytes) throws(InviteError) {
        let count = binary.withUnsafeBytes { $0.count }
        let secretEnd = 2 + Self.roomSecretLength
        guard count >= secretEnd + Self.checksumLength else {
            throw .malformed("message ends inside the room secret or checksum: \(count) bytes")
        }
        let secret = binary.withUnsafeBytes {
            SecureBytes(copying: UnsafeRawBufferPointer(rebasing: $0[2..<secretEnd]))
        }
        var reader = ByteReader(binary.withUnsafeBytes { Array($0[secretEnd..<(count - Self.checksumLength)]) })
        do {
            var url: RendezvousURL?
            var pin: [UInt8]?
            var hints: [TURNHint] = []
            while !reader.isAtEnd {
                let tagValue = try reader.readU8("field tag")
                let value = try reader.readSlice(Int(try reader.readU8("field length")), "field value")
                switch Tag(rawValue: tagValue) {
                case .rendezvousURL:
                    guard url == nil else { throw InviteError.duplicateField("rendezvous URL") }
                    guard let text = String(validating: value, as: UTF8.self) else {
                        throw InviteError.badRendezvousURL("not UTF-8")
                    }
                    url = try RendezvousURL(parsing: text)
                case .tlsPin:
                    guard pin == nil else { throw InviteError.duplicateField("TLS pin") }
                    pin = Array(value)
                case .turnHint:
                    var hint = ByteReader(value)
                    var texts: [String] = []
                    for field: StaticString in ["TURN URI", "TURN user name", "TURN password"] {
                        texts.append(try hint.readUTF8(Int(try hint.readU8(field)), field))
                    }
                    try hint.expectEnd("the TURN hint")
                    hints.append(try TURNHint(uri: texts[0], username: texts[1], password: texts[2]))
                case nil:
                    guard tagValue >= 0x80 else { throw InviteError.unknownRequiredField(tagValue) }
                }
            }
            guard let url else { throw InviteError.missingRendezvousURL }
            try self.init(roomSecret: secret, rendezvous: url, tlsPin: pin, turnHints: hints)
        } catch let error as InviteError {
            throw error
        } catch {
            throw .malformed("\(error)")
        }
    }
}
