/// Constants of the rendezvous transport (docs/PROTOCOL.md §4.1) and the fuzz entry points of
/// this module's parsers.
public enum RendezvousWire {
    /// The WebSocket subprotocol (`Sec-WebSocket-Protocol`) of Parley rendezvous version 1.
    public static let subprotocol = "parley.v1"
    /// Every server accepts messages (type byte included) of at least this size (§4.1).
    public static let minimumMessageLimit = 16_384

    /// Fuzz target for the rendezvous message parser: parses `bytes` and, when that succeeds,
    /// checks that encoding gives the same bytes back (the format has exactly one encoding of each
    /// message). Traps only on a round-trip mismatch, which is a bug the fuzzer should report.
    public static func fuzz(_ bytes: UnsafeRawBufferPointer) {
        guard let message = try? RendezvousMessage.parse(bytes) else { return }
        let encoded = message.encoded()
        precondition(encoded.elementsEqual(bytes), "rendezvous round trip changed the bytes of \(message.type)")
    }

    /// Fuzz target for the STUN parser and the Binding responder: parses `bytes` as STUN; when
    /// that succeeds, re-encodes and checks the re-parse gives the same message (padding bytes may
    /// differ: RFC 8489 §14 lets them be anything); and runs the responder, whose every answer
    /// must itself parse as a response with the request's transaction id — or, for what is not
    /// RFC 8489 STUN, be the RFC 3489 answer echoing the request's 16-byte transaction id.
    public static func fuzzSTUN(_ bytes: UnsafeRawBufferPointer) {
        let source = STUNTransportAddress(address: [192, 0, 2, 1], port: 32853)!
        let answer = STUNBindingResponder.response(to: bytes, from: source)
        guard let message = try? STUNMessage.parse(bytes) else {
            if let answer {
                precondition(
                    answer.count == 32 && answer.prefix(4).elementsEqual([0x01, 0x01, 0x00, 0x0C])
                        && answer[4..<20].elementsEqual(bytes[4..<20]),
                    "classic STUN answer is malformed")
            }
            return
        }
        let reparsed = try? STUNMessage.parse(message.encoded())
        precondition(reparsed == message, "STUN round trip changed the message")
        if let answer {
            let response = try? STUNMessage.parse(answer)
            precondition(response?.transactionID == message.transactionID, "STUN response lost the transaction id")
        }
    }

    /// Fuzz target for what a trusted proxy tells about a client: the PROXY protocol header (a
    /// header's outcome depends on its own bytes only, and never claims more bytes than it was
    /// given), and the same bytes as text: an IP address or network re-reads from its printed
    /// form, and `X-Forwarded-For` entries never crash.
    public static func fuzzClientAddress(_ bytes: [UInt8]) {
        if case .header(let length, let source)? = try? ProxyProtocolHeader.parse(bytes) {
            precondition(length <= bytes.count, "PROXY header longer than its input")
            let alone = try? ProxyProtocolHeader.parse(Array(bytes.prefix(length)))
            precondition(alone == .header(length: length, source: source), "PROXY header depends on later bytes")
        }
        let text = String(decoding: bytes, as: UTF8.self)
        if let address = InternetAddress(parsing: text) {
            precondition(InternetAddress(parsing: address.description) == address, "IP address round trip changed it")
        }
        if let network = IPNetwork(parsing: text) {
            precondition(IPNetwork(parsing: network.description) == network, "network round trip changed it")
            precondition(network.contains(network.address), "a network must contain its own address")
        }
        _ = ForwardedFor.hops([text])
    }

    /// Valid inputs for `fuzzClientAddress`: PROXY headers of both versions, addresses, networks
    /// and an `X-Forwarded-For` list.
    public static func clientAddressSeeds() -> [[UInt8]] {
        let v2Head = ProxyProtocolHeader.v2Signature
        let v4 = v2Head + [0x21, 0x11, 0x00, 0x0C, 192, 0, 2, 1, 198, 51, 100, 7, 0xC3, 0x50, 0x1E, 0x61]
        let v6 =
            v2Head + [0x21, 0x21, 0x00, 0x24] + [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
            + [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [2] + [0xC3, 0x50, 0x1E, 0x61]
        let local = v2Head + [0x20, 0x00, 0x00, 0x00]
        let texts = [
            "PROXY TCP4 192.0.2.1 198.51.100.7 50000 7777\r\nGET / HTTP/1.1\r\n",
            "PROXY TCP6 2001:db8::1 2001:db8::2 50000 7777\r\n", "PROXY UNKNOWN\r\n", "192.0.2.1",
            "2001:db8::ffff:0:1", "::ffff:192.0.2.1", "10.0.0.0/8", "2001:db8::/32",
            "203.0.113.9, 198.51.100.1:4711, [2001:db8::1]:80, unknown",
        ]
        return [v4, v6, local] + texts.map { Array($0.utf8) }
    }
}
