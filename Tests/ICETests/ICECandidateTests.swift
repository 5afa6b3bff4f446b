import ICE
import ParleyCore
import Testing

@Suite("ICE candidate lines (RFC 5245 §15.1)")
struct ICECandidateTests {
    /// Lines as libnice, browsers and aioice write them, and what they must parse to.
    static let valid: [(line: String, kind: ICECandidate.Kind, address: String, port: UInt16, related: String?)] = [
        ("candidate:1 1 UDP 2013266431 10.11.0.2 40402 typ host", .host, "10.11.0.2", 40402, nil),
        (
            "candidate:2 1 UDP 1677721855 198.51.100.11 40402 typ srflx raddr 10.11.0.2 rport 40402", .serverReflexive,
            "198.51.100.11", 40402, "10.11.0.2"
        ),
        (
            "candidate:3 1 udp 16777215 203.0.113.10 49160 typ relay raddr 198.51.100.11 rport 40402 generation 2",
            .relayed, "203.0.113.10", 49160, "198.51.100.11"
        ),
        (
            "candidate:4 1 UDP 1845501695 198.51.100.21 5000 typ prflx raddr 0.0.0.0 rport 0", .peerReflexive,
            "198.51.100.21", 5000, "0.0.0.0"
        ),
        ("a=candidate:abc+/ 1 UDP 1 2001:db8::1 1 typ host\r\n", .host, "2001:db8::1", 1, nil),
        (
            "candidate:5 1 UDP 2130706431 ::ffff:10.0.0.1 65535 typ host network-id 1 network-cost 10", .host,
            "::ffff:10.0.0.1", 65535, nil
        ),
        ("candidate:6 1 TCP 1015021823 10.0.0.1 9 typ host tcptype active", .host, "10.0.0.1", 9, nil),
        ("candidate:7 1 UDP 4294967295 10.0.0.1 1 typ host ufrag Ab3+", .host, "10.0.0.1", 1, nil),
    ]

    @Test(arguments: valid)
    func parsesValidLines(
        line: String, kind: ICECandidate.Kind, address: String, port: UInt16, related: String?
    )
        throws
    {
        let candidate = try ICECandidate(line: line)
        #expect(candidate.kind == kind)
        #expect(candidate.address == IPAddress(address))
        #expect(candidate.port == port)
        #expect(candidate.relatedAddress == related.flatMap { IPAddress($0) })
        #expect(candidate.component == 1)
        // What we print parses back to the same candidate.
        #expect(try ICECandidate(line: candidate.line) == candidate)
    }

    @Test func formatsTheWireLineExactly() {
        let candidate = ICECandidate(
            foundation: "2", priority: 1_677_721_855, address: IPAddress("198.51.100.11")!, port: 40402,
            kind: .serverReflexive, relatedAddress: IPAddress("10.11.0.2")!, relatedPort: 40402, generation: 0,
            ufrag: "Xy7f")
        #expect(
            candidate.line
                == "candidate:2 1 UDP 1677721855 198.51.100.11 40402 typ srflx raddr 10.11.0.2 rport 40402 generation 0 ufrag Xy7f"
        )
    }

    @Test func keepsGenerationUfragAndTCPType() throws {
        let candidate = try ICECandidate(
            line: "candidate:9 1 TCP 5 10.0.0.1 8000 typ host tcptype passive generation 3 ufrag abcd")
        #expect(candidate.transport == .tcp(.passive))
        #expect(candidate.generation == 3)
        #expect(candidate.ufrag == "abcd")
    }

    /// Malformed lines from the network: each one a clear error of the right kind.
    static let malformed: [(String, ICECandidateError.Reason)] = [
        ("", .missingPrefix),
        ("1 1 UDP 1 10.0.0.1 1 typ host", .missingPrefix),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ", .missingField),
        ("candidate: 1 UDP 1 10.0.0.1 1 typ host", .missingField),
        ("candidate:1 1 UDP 1 10.0.0.1 1 host typ", .missingType),
        ("candidate:" + String(repeating: "f", count: 33) + " 1 UDP 1 10.0.0.1 1 typ host", .invalidFoundation),
        ("candidate:a-b 1 UDP 1 10.0.0.1 1 typ host", .invalidFoundation),
        ("candidate:1 0 UDP 1 10.0.0.1 1 typ host", .invalidComponent),
        ("candidate:1 -1 UDP 1 10.0.0.1 1 typ host", .invalidComponent),
        ("candidate:1 999999 UDP 1 10.0.0.1 1 typ host", .invalidComponent),
        ("candidate:1 1 SCTP 1 10.0.0.1 1 typ host", .unsupportedTransport),
        ("candidate:1 1 UDP 4294967296 10.0.0.1 1 typ host", .invalidPriority),
        ("candidate:1 1 UDP +5 10.0.0.1 1 typ host", .invalidPriority),
        ("candidate:1 1 UDP 99999999999 10.0.0.1 1 typ host", .invalidPriority),
        ("candidate:1 1 UDP 1 example.org 1 typ host", .invalidAddress),
        ("candidate:1 1 UDP 1 3c1a5e8f-1b7a.local 1 typ host", .invalidAddress),
        ("candidate:1 1 UDP 1 10.0.0.256 1 typ host", .invalidAddress),
        ("candidate:1 1 UDP 1 010.0.0.1 1 typ host", .invalidAddress),
        ("candidate:1 1 UDP 1 10.0.0.1.5 1 typ host", .invalidAddress),
        ("candidate:1 1 UDP 1 fe80::1%eth0 1 typ host", .invalidAddress),
        ("candidate:1 1 UDP 1 [::1] 1 typ host", .invalidAddress),
        ("candidate:1 1 UDP 1 10.0.0.1 65536 typ host", .invalidPort),
        ("candidate:1 1 UDP 1 10.0.0.1 0 typ host", .invalidPort),
        ("candidate:1 1 UDP 1 10.0.0.1 x typ host", .invalidPort),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ bogus", .unknownType),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ srflx raddr 10.0.0.2", .invalidRelatedAddress),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ srflx raddr", .invalidExtension),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ srflx rport 5 generation 1", .invalidRelatedAddress),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ srflx raddr x rport 5", .invalidRelatedAddress),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ srflx raddr 10.0.0.2 rport +5", .invalidRelatedAddress),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ srflx raddr 10.0.0.2 rport 5 raddr 10.0.0.3", .duplicateAttribute),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ host generation 1 generation 2", .duplicateAttribute),
        ("candidate:1 1 TCP 1 10.0.0.1 1 typ host", .invalidTCPType),
        ("candidate:1 1 TCP 1 10.0.0.1 1 typ host tcptype sideways", .invalidTCPType),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ host tcptype active", .invalidTCPType),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ host generation -1", .invalidGeneration),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ host generation 9999999999", .invalidGeneration),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ host ufrag ab", .invalidUfrag),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ host ufrag ab_cd", .invalidUfrag),
        ("candidate:1 1 UDP 1 10.0.0.1\u{0} 1 typ host", .invalidCharacters),
        ("candidate:1 1 UDP 1 10.0.0.1\t1 typ host", .invalidCharacters),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ höst", .invalidCharacters),
        ("candidate:1 1 UDP 1 10.0.0.1 1 typ host " + String(repeating: "x y ", count: 200), .tooLong),
    ]

    @Test(arguments: malformed)
    func refusesMalformedLines(line: String, reason: ICECandidateError.Reason) {
        #expect {
            _ = try ICECandidate(line: line)
        } throws: { error in
            guard let error = error as? ICECandidateError else { return false }
            return error.reason == reason && error.description.hasPrefix("invalid ICE candidate: ")
        }
    }

    @Test func errorMessagesQuoteLittleOfTheInput() {
        let hostile = "candidate:1 1 UDP 1 " + String(repeating: "A", count: 300) + " 1 typ host"
        #expect {
            _ = try ICECandidate(line: hostile)
        } throws: { error in
            String(describing: error).count < 120
        }
    }

    /// Seeded mutations of valid lines (bytes flipped, dropped, duplicated, fields shuffled): the
    /// parser must either refuse with an `ICECandidateError` or return a candidate whose printed
    /// line parses back to itself. A crash or a trap fails the whole test run.
    @Test func survivesMutatedLines() {
        var random = SeededGenerator(seed: 0x5EED_1CE)
        let seeds = Self.valid.map(\.line)
        let alphabet = Array(" :.0123456789abcdefABCDEF/+-typhostsrflxrelayUDPTCPraddrrport\u{0}\u{7f}\u{ff}é%[]".utf8)
        var accepted = 0
        for _ in 0..<20_000 {
            var bytes = Array(seeds[Int(random.next() % UInt64(seeds.count))].utf8)
            for _ in 0..<(1 + random.next() % 4) {
                let position = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
                switch random.next() % 5 {
                case 0 where !bytes.isEmpty: bytes[position] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                case 1 where !bytes.isEmpty: bytes.remove(at: position)
                case 2: bytes.insert(alphabet[Int(random.next() % UInt64(alphabet.count))], at: position)
                case 3 where !bytes.isEmpty: bytes.insert(contentsOf: bytes[position...].prefix(12), at: position)
                default:
                    var fields = bytes.split(separator: UInt8(ascii: " "))
                    if fields.count > 2 { fields.swapAt(1, fields.count - 1) }
                    bytes = Array(fields.joined(separator: [UInt8(ascii: " ")]))
                }
            }
            let line = String(decoding: bytes, as: UTF8.self)
            do {
                let candidate = try ICECandidate(line: line)
                accepted += 1
                #expect(try ICECandidate(line: candidate.line) == candidate, "round trip of \(line)")
            } catch {
                #expect(!error.description.isEmpty)
            }
        }
        // Some mutations (a digit changed) stay valid; most must not.
        #expect(accepted > 100 && accepted < 19_000)
    }
}

@Suite("IP address literals")
struct IPAddressTests {
    static let classified: [(String, unspecified: Bool, loopback: Bool, linkLocal: Bool, multicast: Bool)] = [
        ("0.0.0.0", true, false, false, false),
        ("::", true, false, false, false),
        ("127.0.0.1", false, true, false, false),
        ("127.255.0.9", false, true, false, false),
        ("::1", false, true, false, false),
        ("::ffff:127.0.0.1", false, true, false, false),
        ("169.254.10.1", false, false, true, false),
        ("fe80::1", false, false, true, false),
        ("febf::1", false, false, true, false),
        ("fec0::1", false, false, false, false),
        ("224.0.0.251", false, false, false, true),
        ("239.255.255.250", false, false, false, true),
        ("ff02::fb", false, false, false, true),
        ("10.11.0.2", false, false, false, false),
        ("2001:db8::1", false, false, false, false),
    ]

    @Test(arguments: classified)
    func classifies(text: String, unspecified: Bool, loopback: Bool, linkLocal: Bool, multicast: Bool) throws {
        let address = try #require(IPAddress(text))
        #expect(address.isUnspecified == unspecified)
        #expect(address.isLoopback == loopback)
        #expect(address.isLinkLocal == linkLocal)
        #expect(address.isMulticast == multicast)
    }

    @Test(arguments: ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"])
    func printsCanonically(text: String) {
        #expect(IPAddress(text)?.description == "2001:db8::1")
    }

    @Test(arguments: ["", " 10.0.0.1", "10.0.0", "1.2.3.4.", "localhost", "1.2.3.4\u{0}", "::1%lo", "12345::"])
    func refuses(text: String) {
        #expect(IPAddress(text) == nil)
    }
}
