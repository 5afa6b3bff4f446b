import ParleyProtocol

/// Fuzz entry points for what MeetingCore reads from the network (docs/DEVELOPING.md,
/// "Fuzzing"): each takes any bytes and must return without crashing; properties that must hold
/// are `precondition`s.
public enum MeetingCoreFuzz {
    /// Session control messages (§10, §13, §14) and chat reassembly (§14.1). The whole input is
    /// parsed as one message (a parsed message re-encodes to itself); then it is read as a
    /// series of messages, each `length: u8 || payload`, and the CHAT pieces among them go to
    /// one peer's receiving stream: its acknowledgement never goes back, and every message it
    /// completes is valid UTF-8 (Swift strings are) of 1...4096 bytes.
    public static func sessionControl(_ data: [UInt8]) {
        if let message = try? SessionControl(parsing: data) {
            precondition(
                (try? SessionControl(parsing: message.encoded())) == message,
                "a parsed session control message does not survive encoding and parsing again")
        }
        var streams = ChatStreams(epoch: 1)
        var acknowledged: UInt32 = 0
        var position = 0
        while position < data.count {
            let length = Int(data[position])
            let end = min(data.count, position + 1 + length)
            // A short length field expands to a full piece now and then, so reassembly of
            // messages longer than a piece is reached.
            var payload = Array(data[(position + 1)..<end])
            if payload.first == SessionControl.chatType, payload.count >= 10, payload[9] & 0x80 != 0 {
                payload += [UInt8](repeating: payload[payload.count - 1], count: 900)
            }
            position = end
            guard case .chat(let piece)? = try? SessionControl(parsing: payload) else { continue }
            let result = streams.receive(piece)
            precondition(result.acknowledge >= acknowledged, "the chat acknowledgement went back")
            acknowledged = result.acknowledge
            for text in result.messages {
                precondition(
                    (1...SessionControl.Chat.maximumMessageBytes).contains(text.utf8.count),
                    "a delivered chat message has \(text.utf8.count) bytes")
            }
        }
    }

    public static func sessionControlSeeds() -> [[UInt8]] {
        let pieces = [
            SessionControl.chat(.init(sequence: 1, first: 1, more: true, text: Array("héllo, ".utf8))),
            SessionControl.chat(.init(sequence: 3, first: 1, more: false, text: Array("again".utf8))),
            SessionControl.chat(.init(sequence: 2, first: 1, more: false, text: Array("wörld".utf8))),
            SessionControl.chat(.init(sequence: 9, first: 7, more: false, text: [0x41])),
        ].map { $0.encoded() }
        var series: [UInt8] = []
        for piece in pieces { series += [UInt8(piece.count)] + piece }
        return pieces + [
            series, SessionControl.chatAck(cumulative: 7).encoded(), SessionControl.leave.encoded(),
            SessionControl.report(.init(timestampMs: 1, lossPermille: 20)).encoded(),
            SessionControl.report(.init(timestampMs: 1, mediaReceived: 3, muted: true, recording: true)).encoded(),
            SessionControl.recording(true).encoded(),
            SessionControl.links(
                .init(relays: true, peers: [.init(identityKey: .init(repeating: 1, count: 32), rttMs: 9)])
            )
            .encoded(),
            SessionControl.relayRefused(destination: .init(repeating: 2, count: 32), reason: .busy).encoded(),
        ]
    }
}
