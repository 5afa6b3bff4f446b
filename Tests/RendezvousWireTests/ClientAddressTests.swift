import ParleyCore
import RendezvousWire
import Testing

/// What a trusted proxy says about a client: IP addresses and networks as text, the PROXY
/// protocol header (versions 1 and 2), and `X-Forwarded-For`.
@Suite("Client addresses from proxies")
struct ClientAddressTests {
    @Test(
        arguments: [
            ("192.0.2.1", [192, 0, 2, 1], "192.0.2.1"),
            ("0.0.0.0", [0, 0, 0, 0], "0.0.0.0"),
            ("2001:db8::1", [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1], "2001:db8::1"),
            ("2001:DB8:0:0:0:0:0:1", [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1], "2001:db8::1"),
            ("::", [UInt8](repeating: 0, count: 16), "::"),
            ("::1", [UInt8](repeating: 0, count: 15) + [1], "::1"),
            ("::ffff:192.0.2.1", [UInt8](repeating: 0, count: 10) + [0xFF, 0xFF, 192, 0, 2, 1], "::ffff:192.0.2.1"),
            // RFC 5952 §4.2.2: a single zero group is not shortened; §4.2.3: the first of equal runs.
            ("1:0:2:3:4:5:6:7", [0, 1, 0, 0, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7], "1:0:2:3:4:5:6:7"),
            ("1:0:0:2:0:0:3:4", [0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4], "1::2:0:0:3:4"),
        ] as [(String, [UInt8], String)])
    func addressesParseAndPrintCanonically(text: String, bytes: [UInt8], canonical: String) throws {
        let address = try #require(InternetAddress(parsing: text))
        #expect(address.bytes == bytes)
        #expect(address.description == canonical)
    }

    @Test(arguments: [
        "", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1.2.3.4 ", "+1.2.3.4", "1:2:3:4:5:6:7", "1::2::3",
        ":::1", "1:2:3:4:5:6:7:8:9", "12345::1", "::g", "fe80::1%eth0", "1:2:3:4:5:6:7::8", "::1.2.3", "1.2.3.4::",
        "[::1]", "::+1",
    ])
    func malformedAddressesAreRefused(text: String) {
        #expect(InternetAddress(parsing: text) == nil)
    }

    @Test func mappedAddressesUnmapToIPv4() {
        #expect(InternetAddress(parsing: "::ffff:10.1.2.3")!.unmapped == InternetAddress(parsing: "10.1.2.3"))
        #expect(InternetAddress(parsing: "2001:db8::1")!.unmapped == InternetAddress(parsing: "2001:db8::1"))
    }

    @Test func networksContainTheirAddressesOnly() throws {
        let private10 = try #require(IPNetwork(parsing: "10.0.0.0/8"))
        #expect(private10.contains(InternetAddress(parsing: "10.255.0.1")!))
        #expect(private10.contains(InternetAddress(parsing: "::ffff:10.0.0.1")!), "a dual-stack socket's IPv4 peer")
        #expect(!private10.contains(InternetAddress(parsing: "11.0.0.1")!))
        #expect(!private10.contains(InternetAddress(parsing: "::a00:1")!), "IPv6 is not IPv4")
        #expect(IPNetwork(parsing: "192.0.2.77/24")?.description == "192.0.2.0/24", "host bits cleared")
        #expect(IPNetwork(parsing: "127.0.0.1")?.description == "127.0.0.1/32")
        #expect(IPNetwork(parsing: "::ffff:10.0.0.0/104")?.description == "10.0.0.0/8")
        let v6 = try #require(IPNetwork(parsing: "2001:db8:1::/48"))
        #expect(v6.contains(InternetAddress(parsing: "2001:db8:1:ffff::5")!))
        #expect(!v6.contains(InternetAddress(parsing: "2001:db8:2::5")!))
        #expect(IPNetwork(parsing: "0.0.0.0/0")?.contains(InternetAddress(parsing: "203.0.113.9")!) == true)
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "::/129", "10.0.0.0/8/8", "example.org/8", "/8"] {
            #expect(IPNetwork(parsing: bad) == nil, "\(bad)")
        }
    }

    // MARK: PROXY protocol

    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    @Test func proxyV1NamesTheSource() throws {
        let header = Array("PROXY TCP4 192.0.2.1 198.51.100.7 50000 7777\r\n".utf8)
        let outcome = try ProxyProtocolHeader.parse(header + Array("GET / HTTP/1.1\r\n".utf8))
        #expect(outcome == .header(length: header.count, source: InternetAddress(parsing: "192.0.2.1")))
        let v6 = Array("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n".utf8)
        #expect(
            try ProxyProtocolHeader.parse(v6)
                == .header(length: v6.count, source: InternetAddress(parsing: "2001:db8::1")))
        let unknown = Array("PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n".utf8)
        #expect(try ProxyProtocolHeader.parse(unknown) == .header(length: unknown.count, source: nil))
    }

    @Test func proxyV2NamesTheSourceAndLocalNamesNone() throws {
        let v4 = Self.signature + [0x21, 0x11, 0x00, 0x0C, 192, 0, 2, 1, 198, 51, 100, 7, 0xC3, 0x50, 0x1E, 0x61]
        #expect(
            try ProxyProtocolHeader.parse(v4 + [0x16, 3, 1])
                == .header(length: 28, source: InternetAddress(parsing: "192.0.2.1")))
        let v6Source = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [9]
        let v6 =
            Self.signature + [0x21, 0x21, 0x00, 0x24] + v6Source + [UInt8](repeating: 1, count: 16) + [0, 1, 0, 2]
        #expect(try ProxyProtocolHeader.parse(v6) == .header(length: 52, source: InternetAddress(bytes: v6Source)))
        // TLVs after the addresses are part of the header (skipped).
        let withTLV = Self.signature + [0x21, 0x11, 0x00, 0x11] + Array(v4[16...]) + [0x04, 0x00, 0x02, 0xAB, 0xCD]
        #expect(
            try ProxyProtocolHeader.parse(withTLV) == .header(length: 33, source: InternetAddress(parsing: "192.0.2.1"))
        )
        // A health check: LOCAL, no address to believe.
        #expect(
            try ProxyProtocolHeader.parse(Self.signature + [0x20, 0x00, 0x00, 0x00]) == .header(length: 16, source: nil)
        )
    }

    @Test func partialHeadersWaitAndOtherStreamsPass() throws {
        let v1 = Array("PROXY TCP4 192.0.2.1 198.51.100.7 50000 7777\r\n".utf8)
        let v2 = Self.signature + [0x21, 0x11, 0x00, 0x0C, 192, 0, 2, 1, 198, 51, 100, 7, 0xC3, 0x50, 0x1E, 0x61]
        for header in [v1, v2] {
            for cut in 1..<header.count {
                #expect(try ProxyProtocolHeader.parse(Array(header.prefix(cut))) == .needMoreBytes, "\(cut) bytes")
            }
        }
        #expect(try ProxyProtocolHeader.parse(Array("GET / HTTP/1.1\r\n".utf8)) == .absent)
        #expect(try ProxyProtocolHeader.parse([0x16, 0x03, 0x01]) == .absent, "a TLS ClientHello")
        #expect(try ProxyProtocolHeader.parse(Array("PROXX".utf8)) == .absent)
        #expect(try ProxyProtocolHeader.parse([0x0D, 0x0A, 0x0D, 0x0B]) == .absent)
    }

    @Test(arguments: [
        Array("PROXY TCP4 192.0.2.1\r\n".utf8), Array("PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n".utf8),
        Array("PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n".utf8), Array("PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n".utf8),
        Array("PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n".utf8),
        Array(("PROXY TCP4 " + String(repeating: "1", count: 120)).utf8),
        // Version 1 in a v2 header.
        ClientAddressTests.signature + [0x11, 0x11, 0x00, 0x0C] + [UInt8](repeating: 0, count: 12),
        ClientAddressTests.signature + [0x22, 0x11, 0x00, 0x0C] + [UInt8](repeating: 0, count: 12),  // command 2
        ClientAddressTests.signature + [0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4],  // IPv4 without room for its addresses
        ClientAddressTests.signature + [0x21, 0x41, 0x00, 0x00],  // family 4
        ClientAddressTests.signature + [0x21, 0x11, 0xFF, 0xFF],  // longer than a rendezvous accepts
    ])
    func malformedHeadersAreRefused(bytes: [UInt8]) {
        #expect(throws: RendezvousWireError.self) { try ProxyProtocolHeader.parse(bytes) }
    }

    // MARK: X-Forwarded-For

    @Test func forwardedForListsEveryHop() {
        let hops = ForwardedFor.hops(["203.0.113.9, 198.51.100.1:4711", " [2001:db8::1]:80 ,unknown,, 2001:db8::2"])
        #expect(
            hops == [
                InternetAddress(parsing: "203.0.113.9"), InternetAddress(parsing: "198.51.100.1"),
                InternetAddress(parsing: "2001:db8::1"),
                nil, InternetAddress(parsing: "2001:db8::2"),
            ])
        #expect(ForwardedFor.hops([]).isEmpty)
        #expect(ForwardedFor.hops(["192.0.2.1:port", "[::1]x"]) == [nil, nil])
    }

    @Test func fuzzEntryPointHoldsOnItsSeedsAndMutations() {
        var rng = SeededGenerator(seed: 0x5EED_0018)
        let seeds = RendezvousWire.clientAddressSeeds()
        for round in 0..<30_000 {
            RendezvousWire.fuzzClientAddress(FuzzMutationTests.mutate(seeds[round % seeds.count], using: &rng))
        }
    }
}
