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
}
