import ParleyCore
import ParleyProtocol
import Testing

@Suite("RECORDING and the REPORT recording flag (PROTOCOL §14.2)")
struct RecordingControlTests {
    /// The examples of §14.2: `09 01` and `09 00`.
    @Test(arguments: [(true, "0901"), (false, "0900")])
    func layout(recording: Bool, hex: String) throws {
        let bytes = SessionControl.recording(recording).encoded()
        #expect(hexString(bytes) == hex)
        #expect(try SessionControl(parsing: bytes) == .recording(recording))
    }

    /// Reserved bits are ignored, appended bytes too; an empty body is too short.
    @Test func reservedBitsAndTruncation() throws {
        #expect(try SessionControl(parsing: [0x09, 0xfe]) == .recording(false))
        #expect(try SessionControl(parsing: [0x09, 0xff, 7, 7]) == .recording(true))
        #expect(throws: WireFormatError.self) { try SessionControl(parsing: [0x09]) }
    }

    /// REPORT flags bit 1 carries the state beside bit 0 (muted), both ways.
    @Test(arguments: [(false, false, UInt8(0x00)), (true, false, 0x01), (false, true, 0x02), (true, true, 0x03)])
    func reportFlag(muted: Bool, recording: Bool, flags: UInt8) throws {
        let report = SessionControl.Report(timestampMs: 1, muted: muted, recording: recording)
        let bytes = SessionControl.report(report).encoded()
        #expect(bytes[27] == flags)
        #expect(try SessionControl(parsing: bytes) == .report(report))
    }
}
