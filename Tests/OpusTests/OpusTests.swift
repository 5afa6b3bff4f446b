import Opus
import ParleyCore
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("libopus wrapper")
struct OpusTests {
    static let rate = 48_000
    static let frame = 960  // 20 ms

    static func tone(_ frequency: Double, frames: Int) -> [Int16] {
        (0..<(frames * frame)).map { Int16(0.4 * 32767 * sin(2 * Double.pi * frequency * Double($0) / Double(rate))) }
    }

    @Test func parametersAreSetThroughTheShimsAndReadBack() throws {
        let encoder = try OpusEncoder()
        try encoder.set(.bitrate, to: 28_000)
        try encoder.set(.complexity, to: 7)
        try encoder.set(.inbandFEC, to: 1)
        try encoder.set(.dtx, to: 1)
        try encoder.set(.packetLossPercent, to: 12)
        try encoder.setFrameDuration(.ms10)
        #expect(try encoder.get(.bitrate) == 28_000)
        #expect(try encoder.get(.complexity) == 7)
        #expect(try encoder.get(.inbandFEC) == 1)
        #expect(try encoder.get(.dtx) == 1)
        #expect(try encoder.get(.packetLossPercent) == 12)
        #expect(try encoder.frameDuration() == .ms10)
        try encoder.set(.dtx, to: 0)
        try encoder.setFrameDuration(.ms40)
        #expect(try encoder.get(.dtx) == 0)
        #expect(try encoder.frameDuration() == .ms40)
        // VOIP lookahead at 48 kHz is 6.5 ms = 312 samples.
        #expect(try encoder.lookahead() == 312)
    }

    @Test func outOfRangeValuesAreRejectedWithLibopusText() throws {
        let encoder = try OpusEncoder()
        #expect(throws: OpusError.badArgument) { try encoder.set(.complexity, to: 11) }
        #expect(throws: OpusError.badArgument) { try encoder.set(.packetLossPercent, to: 101) }
        #expect(OpusError.badArgument.description.contains("invalid argument"))
        #expect(throws: OpusError.badArgument) { try OpusEncoder(sampleRate: 44_100) }
    }

    @Test func wrongFrameSizeIsRejected() throws {
        let encoder = try OpusEncoder()
        try encoder.setFrameDuration(.ms20)
        #expect(throws: OpusError.badArgument) { try encoder.encode([Int16](repeating: 0, count: 480)) }
    }

    @Test(arguments: [440.0, 1000.0])
    func oneSecondToneSurvivesEncodeAndDecode(frequency: Double) throws {
        let encoder = try OpusEncoder()
        try encoder.set(.bitrate, to: 32_000)
        let decoder = try OpusDecoder()
        let input = Self.tone(frequency, frames: 50)
        var output: [Int16] = []
        var totalBytes = 0
        for index in 0..<50 {
            let packet = try encoder.encode(Array(input[(index * Self.frame)..<((index + 1) * Self.frame)]))
            totalBytes += packet.count
            output += try decoder.decode(packet, maximumSamples: 5760)
        }
        #expect(output.count == input.count)
        // Roughly the configured bitrate: 32 kb/s for 1 s is 4000 bytes.
        #expect((2000...6000).contains(totalBytes))
        // Skip the first 100 ms (encoder start-up), then the dominant frequency must match.
        let found = try #require(Spectrum.dominantFrequency(in: Array(output.dropFirst(4800)), sampleRate: 48_000))
        #expect(abs(found - frequency) < 10)
        let power = Spectrum.power(of: frequency, in: output.dropFirst(4800), sampleRate: 48_000)
        #expect(power > 0.02)  // 0.4 amplitude: (0.2)^2 = 0.04 ideal
    }

    @Test func fecRecoversALostFrameAndPLCFillsAGap() throws {
        let encoder = try OpusEncoder()
        try encoder.set(.bitrate, to: 32_000)
        try encoder.set(.inbandFEC, to: 1)
        try encoder.set(.packetLossPercent, to: 20)
        let input = Self.tone(600, frames: 30)
        let packets = try (0..<30).map { try encoder.encode(Array(input[($0 * Self.frame)..<(($0 + 1) * Self.frame)])) }

        let withFEC = try OpusDecoder()
        let withPLCOnly = try OpusDecoder()
        for index in 0..<20 {
            _ = try withFEC.decode(packets[index], maximumSamples: Self.frame)
            _ = try withPLCOnly.decode(packets[index], maximumSamples: Self.frame)
        }
        // Packet 20 is lost. FEC: rebuild it from packet 21's redundant copy.
        let recovered = try withFEC.decode(packets[21], maximumSamples: Self.frame, recoverFromFEC: true)
        let concealed = try withPLCOnly.decode(nil, maximumSamples: Self.frame)
        #expect(recovered.count == Self.frame)
        #expect(concealed.count == Self.frame)
        #expect(try withPLCOnly.lastPacketDuration() == Self.frame)
        #expect(Spectrum.power(of: 600, in: recovered, sampleRate: 48_000) > 0.01)
        #expect(Spectrum.power(of: 600, in: concealed, sampleRate: 48_000) > 0.001)
        // Without FEC in the stream there is nothing to recover: the decoder falls back to PLC,
        // so the FEC path must differ from plain concealment when FEC data was present.
        #expect(recovered != concealed)
    }

    @Test func malformedPacketsAreRejected() throws {
        let decoder = try OpusDecoder()
        // TOC byte for code 3 (arbitrary frame count) with a missing count byte.
        #expect(throws: OpusError.invalidPacket) { try decoder.decode([0x03], maximumSamples: 5760) }
        #expect(throws: OpusError.self) { try decoder.sampleCount(of: [0xFF]) }
        // A valid packet still decodes after the errors.
        let encoder = try OpusEncoder()
        let packet = try encoder.encode(Self.tone(440, frames: 1))
        #expect(try decoder.sampleCount(of: packet) == Self.frame)
        #expect(try decoder.decode(packet, maximumSamples: 5760).count == Self.frame)
    }
}
