import ParleyCore
import ParleyProtocol
import Testing

@Suite("Session control (PROTOCOL §10)")
struct SessionControlTests {
    static let report = SessionControl.Report(
        timestampMs: 0x0102_0304, echoTimestampMs: 0x1112_1314, echoDelayMs: 250, mediaReceived: 1000,
        mediaExpected: 1010, lossPermille: 10, jitterMicroseconds: 4500, muted: true, queueDelayMs: 12)

    /// The byte layout of §10.1, field by field.
    @Test func reportLayout() throws {
        let bytes = SessionControl.report(Self.report).encoded()
        #expect(bytes.count == 1 + SessionControl.Report.length)
        #expect(
            hexString(bytes)
                == "01" + "01020304" + "11121314" + "000000fa" + "000003e8" + "000003f2" + "000a" + "00001194" + "01"
                + "00" + "000c")
        #expect(try SessionControl(parsing: bytes) == .report(Self.report))
    }

    @Test func leaveIsOneByte() throws {
        #expect(SessionControl.leave.encoded() == [0x02])
        #expect(try SessionControl(parsing: [0x02]) == .leave)
        // Longer is allowed: fields may be appended by later versions.
        #expect(try SessionControl(parsing: [0x02, 0xff]) == .leave)
    }

    @Test func longerReportsParseAndUnknownTypesAreKept() throws {
        let longer = SessionControl.report(Self.report).encoded() + [9, 9, 9]
        #expect(try SessionControl(parsing: longer) == .report(Self.report))
        #expect(try SessionControl(parsing: [0x7f, 1, 2]) == .unknown(0x7f))
    }

    /// `queue_delay_ms` is optional: a 28-byte REPORT (before the field) and 0xFFFF carry none.
    @Test func theQueueDelayIsOptional() throws {
        let bytes = SessionControl.report(Self.report).encoded()
        var without = Self.report
        without.queueDelayMs = nil
        #expect(try SessionControl(parsing: Array(bytes.prefix(1 + 28))) == .report(without))
        #expect(try SessionControl(parsing: Array(bytes.prefix(1 + 28)) + [0xFF, 0xFF]) == .report(without))
        #expect(SessionControl.report(without).encoded().suffix(2) == [0xFF, 0xFF])
        // The largest estimate stays an estimate.
        let largest = SessionControl.Report(timestampMs: 1, queueDelayMs: 0xFFFF)
        #expect(largest.queueDelayMs == 0xFFFE)
    }

    @Test(arguments: 0..<28)
    func truncatedReportsAreRefused(length: Int) {
        let bytes = Array(SessionControl.report(Self.report).encoded().prefix(1 + length))
        #expect(throws: WireFormatError.self) { try SessionControl(parsing: bytes) }
    }

    @Test func emptyPayloadIsRefused() {
        #expect(throws: WireFormatError.self) { try SessionControl(parsing: [UInt8]()) }
    }

    /// Loss above 1000 ‰ is clamped both ways; other flag bits are ignored.
    @Test func valuesAreClamped() throws {
        var report = Self.report
        report.lossPermille = 4000
        let bytes = SessionControl.report(report).encoded()
        #expect(bytes[21...22] == [0x03, 0xe8])
        var tampered = bytes
        tampered[21] = 0xff
        tampered[27] = 0xfe
        guard case .report(let parsed) = try SessionControl(parsing: tampered) else {
            Issue.record("not a report")
            return
        }
        #expect(parsed.lossPermille == 1000)
        #expect(parsed.muted == false)
    }

    /// RTT = now − echoed timestamp − echo delay (mod 2^32), RFC 3550's LSR/DLSR.
    @Test(arguments: [
        // (our send time, peer received it at, peer delay, we receive the echo at, expected RTT)
        (UInt32(1000), UInt32(0), UInt32(300), UInt32(1340), 40.0),
        (UInt32.max - 10, UInt32(0), UInt32(5), UInt32(30), 36.0),  // across the 2^32 wrap: 41 − 5
        (UInt32(500), UInt32(0), UInt32(0), UInt32(500), 0.0),
    ])
    func roundTripTime(sent: UInt32, _: UInt32, delay: UInt32, at now: UInt32, expected: Double) {
        var echo = ReportEcho()
        let report = SessionControl.Report(timestampMs: 77, echoTimestampMs: sent, echoDelayMs: delay)
        #expect(echo.received(report, nowMs: now) == expected)
        #expect(echo.smoothedRTTMs == expected)
    }

    @Test func noEchoAndAbsurdEchoesMeasureNothing() {
        var echo = ReportEcho()
        #expect(echo.received(SessionControl.Report(timestampMs: 5), nowMs: 100) == nil)
        // An echo from "the future" wraps to a huge value: discarded.
        #expect(echo.received(SessionControl.Report(timestampMs: 6, echoTimestampMs: 200), nowMs: 100) == nil)
        #expect(echo.smoothedRTTMs == nil)
    }

    @Test func echoCarriesThePeersTimestampAndHowLongWeHeldIt() {
        var echo = ReportEcho()
        #expect(echo.echo(nowMs: 50) == (0, 0))
        echo.received(SessionControl.Report(timestampMs: 9000), nowMs: 1000)
        #expect(echo.echo(nowMs: 1250) == (9000, 250))
    }

    @Test func smoothingFollowsRFC6298() {
        var echo = ReportEcho()
        echo.received(SessionControl.Report(timestampMs: 1, echoTimestampMs: 100), nowMs: 180)  // 80 ms
        echo.received(SessionControl.Report(timestampMs: 2, echoTimestampMs: 200), nowMs: 360)  // 160 ms
        #expect(echo.latestRTTMs == 160)
        #expect(echo.smoothedRTTMs == 90)  // 80 + (160 − 80) / 8
    }

    @Test func ourTimestampIsNeverZero() {
        #expect(ReportEcho.timestamp(milliseconds: 1 << 32) == 1)
        #expect(ReportEcho.timestamp(milliseconds: (1 << 32) + 5) == 5)
    }
}

@Suite("Chat messages (PROTOCOL §14.1)")
struct ChatControlTests {
    /// The example of §14.1: the second piece of a message, sequence 2, the sender holding
    /// everything from 1, no more pieces, text "hi".
    @Test func chatLayout() throws {
        let chat = SessionControl.chat(.init(sequence: 2, first: 1, more: false, text: Array("hi".utf8)))
        #expect(hexString(chat.encoded()) == "07" + "00000002" + "00000001" + "00" + "6869")
        #expect(try SessionControl(parsing: chat.encoded()) == chat)
        let more = SessionControl.chat(.init(sequence: 7, first: 5, more: true, text: [0xC3]))
        #expect(hexString(more.encoded()) == "07" + "00000007" + "00000005" + "01" + "c3")
        #expect(try SessionControl(parsing: more.encoded()) == more)
        #expect(hexString(SessionControl.chatAck(cumulative: 0x0102_0304).encoded()) == "08" + "01020304")
        #expect(try SessionControl(parsing: [0x08, 0, 0, 0, 9, 0xff]) == .chatAck(cumulative: 9))
    }

    /// Unknown flag bits are ignored; a piece may split a character (checked on the whole message).
    @Test func otherFlagBitsAreIgnored() throws {
        #expect(
            try SessionControl(parsing: [0x07, 0, 0, 0, 1, 0, 0, 0, 1, 0xFE, 0x41])
                == .chat(.init(sequence: 1, first: 1, more: false, text: [0x41])))
    }

    @Test(arguments: [
        // (sequence, first, text length): what §14.1 does not allow
        (UInt32(0), UInt32(0), 1),  // sequence 0
        (1, 0, 1),  // first 0
        (3, 4, 1),  // first after sequence
        (1, 1, 0),  // no text
        (1, 1, 1025),  // a piece above 1024 bytes
    ])
    func malformedPiecesAreRefused(sequence: UInt32, first: UInt32, length: Int) {
        var writer = [UInt8]([0x07])
        for value in [sequence, first] { writer += (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
        writer += [0] + [UInt8](repeating: 0x61, count: length)
        #expect(throws: WireFormatError.self) { try SessionControl(parsing: writer) }
    }

    @Test(arguments: 0..<9)
    func truncatedChatsAreRefused(length: Int) {
        let bytes = Array(
            SessionControl.chat(.init(sequence: 1, first: 1, more: false, text: [0x61])).encoded().prefix(1 + length))
        #expect(throws: WireFormatError.self) { try SessionControl(parsing: bytes) }
        if length < 4 {
            #expect(throws: WireFormatError.self) {
                try SessionControl(parsing: Array(SessionControl.chatAck(cumulative: 1).encoded().prefix(1 + length)))
            }
        }
    }
}
