/// One ICE candidate, as carried in signaling: an RFC 5245 §15.1 `candidate` attribute line
/// (RFC 8839 §5.1), e.g.
///
///     candidate:1 1 UDP 2013266431 10.11.0.2 40402 typ host generation 0 ufrag Xy7f
///     candidate:2 1 UDP 1677721855 198.51.100.11 40402 typ srflx raddr 10.11.0.2 rport 40402 generation 0 ufrag Xy7f
///
/// Parsing is pure Swift and strict, because the lines arrive from other participants: a malformed
/// line is a clear `ICECandidateError`, never a crash or a partial candidate.
public struct ICECandidate: Hashable, Sendable, CustomStringConvertible {
    /// RFC 5245 §4.1.1.3: candidates of the same type, base and server share a foundation.
    public var foundation: String
    /// 1 for every Parley stream (one component: RTP/RTCP multiplexing is not a Parley concept).
    public var component: Int
    public var transport: Transport
    public var priority: UInt32
    public var address: IPAddress
    public var port: UInt16
    public var kind: Kind
    /// `raddr`/`rport` (RFC 5245 §15.1): the base of a reflexive candidate, the mapped address of a
    /// relayed one. Informational only; relay-only mode sends 0.0.0.0 0 so it reveals nothing.
    public var relatedAddress: IPAddress?
    public var relatedPort: UInt16?
    /// Which ICE generation (restart) the candidate belongs to: 0, then +1 per restart.
    public var generation: Int?
    /// The sender's username fragment when the candidate was gathered (RFC 8838 §4.3 ties trickled
    /// candidates to an ICE generation the same way); lets a receiver drop stale candidates.
    public var ufrag: String?

    public enum Transport: Hashable, Sendable, CustomStringConvertible {
        case udp
        /// RFC 6544 ICE-TCP; `tcptype` says how the connection is opened.
        case tcp(TCPType)

        public var description: String {
            switch self {
            case .udp: "UDP"
            case .tcp: "TCP"
            }
        }
    }

    public enum TCPType: String, Hashable, Sendable {
        case active, passive, so
    }

    /// RFC 5245 §4.1.1.1 candidate types.
    public enum Kind: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
        case host
        case serverReflexive = "srflx"
        case peerReflexive = "prflx"
        case relayed = "relay"

        public var description: String { rawValue }
    }

    public init(
        foundation: String, component: Int = 1, transport: Transport = .udp, priority: UInt32, address: IPAddress,
        port: UInt16, kind: Kind, relatedAddress: IPAddress? = nil, relatedPort: UInt16? = nil, generation: Int? = nil,
        ufrag: String? = nil
    ) {
        self.foundation = foundation
        self.component = component
        self.transport = transport
        self.priority = priority
        self.address = address
        self.port = port
        self.kind = kind
        self.relatedAddress = relatedAddress
        self.relatedPort = relatedPort
        self.generation = generation
        self.ufrag = ufrag
    }

    /// The signaling line, without the SDP `a=` prefix.
    public var line: String {
        var fields = [
            "candidate:\(foundation)", String(component), transport.description, String(priority),
            address.description, String(port), "typ", kind.rawValue,
        ]
        if let relatedAddress, let relatedPort {
            fields += ["raddr", relatedAddress.description, "rport", String(relatedPort)]
        }
        if case .tcp(let type) = transport { fields += ["tcptype", type.rawValue] }
        if let generation { fields += ["generation", String(generation)] }
        if let ufrag { fields += ["ufrag", ufrag] }
        return fields.joined(separator: " ")
    }

    public var description: String { line }
}

// MARK: - Parsing

/// Why a candidate line was refused. Quoted fields are shortened and stripped to printable ASCII,
/// so an error message never carries much of what a peer sent.
public struct ICECandidateError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: Hashable, Sendable {
        case tooLong, invalidCharacters, missingPrefix, missingField, invalidFoundation, invalidComponent
        case unsupportedTransport, invalidPriority, invalidAddress, invalidPort, missingType, unknownType
        case invalidRelatedAddress, invalidTCPType, invalidExtension, duplicateAttribute, invalidGeneration
        case invalidUfrag
    }

    public let reason: Reason
    public let description: String

    init(_ reason: Reason, _ description: String) {
        self.reason = reason
        self.description = "invalid ICE candidate: \(description)"
    }

    static func quoted(_ field: some StringProtocol) -> String {
        let printable = field.unicodeScalars.filter { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f }
        let text = String(String.UnicodeScalarView(printable.prefix(40)))
        return printable.count > 40 ? "\"\(text)…\"" : "\"\(text)\""
    }
}

extension ICECandidate {
    /// Longest line accepted: a full IPv6 line with both addresses is about 200 bytes.
    public static let maximumLineLength = 512

    /// Parses a `candidate:` line (optionally prefixed `a=`, optionally ending in CR LF).
    public init(line text: String) throws(ICECandidateError) {
        var line = Substring(text)
        while let last = line.last, last == "\r\n" || last == "\n" || last == "\r" { line = line.dropLast() }
        guard line.utf8.count <= Self.maximumLineLength else {
            throw ICECandidateError(.tooLong, "longer than \(Self.maximumLineLength) bytes")
        }
        // RFC 5245 §15.1 tokens are visible ASCII separated by single spaces.
        guard line.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else {
            throw ICECandidateError(.invalidCharacters, "contains control or non-ASCII characters")
        }
        if line.hasPrefix("a=") { line = line.dropFirst(2) }
        guard line.hasPrefix("candidate:") else {
            throw ICECandidateError(.missingPrefix, "does not start with \"candidate:\"")
        }
        let fields = line.dropFirst("candidate:".count).split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 8 else {
            throw ICECandidateError(.missingField, "has \(fields.count) of the 8 required fields")
        }

        let foundation = fields[0]
        guard (1...32).contains(foundation.utf8.count), foundation.utf8.allSatisfy(Self.isICEChar) else {
            throw ICECandidateError(.invalidFoundation, "foundation \(ICECandidateError.quoted(foundation))")
        }
        guard let component = Self.decimal(fields[1], maxDigits: 5), (1...256).contains(component) else {
            throw ICECandidateError(.invalidComponent, "component id \(ICECandidateError.quoted(fields[1]))")
        }
        let transportName = fields[2].uppercased()
        guard transportName == "UDP" || transportName == "TCP" else {
            throw ICECandidateError(.unsupportedTransport, "transport \(ICECandidateError.quoted(fields[2]))")
        }
        guard let priority = Self.decimal(fields[3], maxDigits: 10), priority <= Int(UInt32.max) else {
            throw ICECandidateError(.invalidPriority, "priority \(ICECandidateError.quoted(fields[3]))")
        }
        guard let address = IPAddress(fields[4]) else {
            // RFC 8839 allows FQDNs (and browsers send mDNS names); Parley peers send literals only.
            throw ICECandidateError(
                .invalidAddress, "address \(ICECandidateError.quoted(fields[4])) is not an IP literal")
        }
        guard let port = Self.port(fields[5]) else {
            throw ICECandidateError(.invalidPort, "port \(ICECandidateError.quoted(fields[5]))")
        }
        guard fields[6] == "typ" else {
            throw ICECandidateError(.missingType, "expected \"typ\", found \(ICECandidateError.quoted(fields[6]))")
        }
        guard let kind = Kind(rawValue: String(fields[7])) else {
            throw ICECandidateError(.unknownType, "candidate type \(ICECandidateError.quoted(fields[7]))")
        }

        // Extension attributes are name/value pairs; unknown names are ignored (RFC 5245 §15.1).
        let extensions = fields.dropFirst(8)
        guard extensions.count % 2 == 0 else {
            throw ICECandidateError(
                .invalidExtension, "attribute \(ICECandidateError.quoted(extensions.last!)) has no value")
        }
        var attributes: [Substring: Substring] = [:]
        var index = extensions.startIndex
        while index < extensions.endIndex {
            let name = extensions[index]
            let value = extensions[index + 1]
            if ["raddr", "rport", "tcptype", "generation", "ufrag"].contains(name) {
                guard attributes.updateValue(value, forKey: name) == nil else {
                    throw ICECandidateError(.duplicateAttribute, "attribute \(ICECandidateError.quoted(name)) repeats")
                }
            }
            index += 2
        }

        var relatedAddress: IPAddress?
        var relatedPort: UInt16?
        switch (attributes["raddr"], attributes["rport"]) {
        case (nil, nil): break
        case (let address?, let port?):
            guard let parsedAddress = IPAddress(address), let parsedPort = Self.port(port) else {
                throw ICECandidateError(
                    .invalidRelatedAddress,
                    "related address \(ICECandidateError.quoted(address)) \(ICECandidateError.quoted(port))")
            }
            relatedAddress = parsedAddress
            relatedPort = parsedPort
        default:
            throw ICECandidateError(.invalidRelatedAddress, "raddr and rport must come together")
        }

        let transport: Transport
        if transportName == "TCP" {
            guard let name = attributes["tcptype"], let type = TCPType(rawValue: String(name)) else {
                throw ICECandidateError(.invalidTCPType, "a TCP candidate needs tcptype active, passive or so")
            }
            transport = .tcp(type)
        } else {
            guard attributes["tcptype"] == nil else {
                throw ICECandidateError(.invalidTCPType, "tcptype on a UDP candidate")
            }
            // Port 0 is only meaningful for active TCP candidates (RFC 6544 §4.5), never for UDP.
            guard port != 0 else { throw ICECandidateError(.invalidPort, "port 0 on a UDP candidate") }
            transport = .udp
        }

        var generation: Int?
        if let value = attributes["generation"] {
            guard let parsed = Self.decimal(value, maxDigits: 9) else {
                throw ICECandidateError(.invalidGeneration, "generation \(ICECandidateError.quoted(value))")
            }
            generation = parsed
        }
        var ufrag: String?
        if let value = attributes["ufrag"] {
            guard ICECredentials.isValidFragment(value, length: 4...256) else {
                throw ICECandidateError(.invalidUfrag, "ufrag \(ICECandidateError.quoted(value))")
            }
            ufrag = String(value)
        }

        self.init(
            foundation: String(foundation), component: component, transport: transport, priority: UInt32(priority),
            address: address, port: port, kind: kind, relatedAddress: relatedAddress, relatedPort: relatedPort,
            generation: generation, ufrag: ufrag)
    }

    /// RFC 5245 §15.1: ice-char = ALPHA / DIGIT / "+" / "/".
    static func isICEChar(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"):
            true
        default: false
        }
    }

    /// Plain decimal digits only (no sign, no spaces), at most `maxDigits` of them.
    private static func decimal(_ text: Substring, maxDigits: Int) -> Int? {
        guard (1...maxDigits).contains(text.utf8.count),
            text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        return Int(text)
    }

    private static func port(_ text: Substring) -> UInt16? {
        guard let value = decimal(text, maxDigits: 5), value <= Int(UInt16.max) else { return nil }
        return UInt16(value)
    }
}
