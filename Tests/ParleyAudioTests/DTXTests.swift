import ParleyAudio
import ParleyCore
import ParleyProtocol
import ParleyTestSupport
import Testing

/// Discontinuous transmission through the real Opus encoder: a pause sends nothing at all, and the
/// receiver plays it as silence, not as loss.
@Suite("DTX: a silent sender sends nothing")
struct DTXTests {
    /// What one frame sent: its media payload's sequence and timestamp, or nil.
    typealias Sent = (sequence: UInt16, timestamp: UInt32)?
    /// At complexity 5 libopus' own voice detector pauses a steady tone after about a second (at
    /// 10, with its tonality analysis, not within 30 s); `--complexity` is the user's choice, so the
    /// rules are tested where Opus' DTX would get them wrong.
    static let complexity = 5

    /// White noise with an RMS of -60 dBFS (uniform in ±0.0017 of full scale), the same every run:
    /// the faint floor a microphone hears in a quiet room after noise suppression.
    static func noiseFloor(frames: Int) -> [Int16] {
        var state: UInt32 = 12345
        return (0..<(frames * Loopback.frame)).map { _ in
            state = state &* 1_664_525 &+ 1_013_904_223
            return Int16(Double(Int32(bitPattern: state)) / Double(Int32.max) * 0.0017 * 32767)
        }
    }

    /// `lead` frames of noise floor, 1 s of tone, `silentFrames` of digital silence, 1 s of tone;
    /// what each frame emitted, whether the sender said it was paused after it, and how many
    /// frames it had encoded.
    static func send(
        dtx: Bool, silentFrames: Int, lead: Int = 0, complexity: Int = complexity
    ) throws -> (
        sent: [Sent], paused: [Bool], encoded: [Int]
    ) {
        let sender = try AudioSender(
            frameDuration: .ms20, complexity: complexity, dtx: dtx, initialSequence: 100, initialTimestamp: 0)
        let input =
            noiseFloor(frames: lead) + Loopback.tone(500, frames: 50)
            + [Int16](repeating: 0, count: silentFrames * Loopback.frame) + Loopback.tone(500, frames: 50)
        var sent: [Sent] = []
        var paused: [Bool] = []
        var encoded: [Int] = []
        for index in 0..<(input.count / Loopback.frame) {
            var this: Sent = nil
            try input[(index * Loopback.frame)..<((index + 1) * Loopback.frame)].withUnsafeBufferPointer { pcm in
                try sender.process(pcm) { payload in
                    let parsed = try? MediaPayload(parsing: payload)
                    this = parsed.map { ($0.sequence, $0.timestamp) }
                }
            }
            sent.append(this)
            paused.append(sender.isPausedByDTX)
            encoded.append(sender.framesEncoded)
        }
        return (sent, paused, encoded)
    }

    @Test func aPauseSendsNothingAfterItsHangover() throws {
        let (sent, paused, encoded) = try Self.send(dtx: true, silentFrames: 100)
        #expect(sent[0..<50].allSatisfy { $0 != nil }, "speech is sent")
        #expect(!paused[49])
        // The first 200 ms of quiet (10 frames) are sent, then nothing.
        let silence = sent[50..<150]
        let firstHeld = try #require(silence.firstIndex { $0 == nil })
        #expect(firstHeld - 50 == 10, "DTX began \(firstHeld - 50) frames into the pause")
        let held = sent[firstHeld..<150]
        #expect(held.allSatisfy { $0 == nil }, "frames sent in the pause: \(held.indices.filter { sent[$0] != nil })")
        #expect(paused[firstHeld..<150].allSatisfy { $0 })
        // Once paused, quiet frames are not even encoded.
        #expect(encoded[149] == encoded[firstHeld], "\(encoded[149] - encoded[firstHeld]) frames encoded in the pause")
        // Speech is sent again at once, numbered on from the last frame sent, stamped with its time.
        let resumed = try #require(sent[150])
        #expect(!paused[150])
        let last = try #require(sent[..<firstHeld].last ?? nil)
        #expect(resumed.sequence == last.sequence &+ 1)
        #expect(resumed.timestamp == UInt32(150 * Loopback.frame))
    }

    /// A microphone that hears only a faint noise floor from the start — a participant who joins
    /// and listens — pauses like one that fell quiet after speaking. (libopus' DTX at the default
    /// complexity never paused here: it waits for input 25 dB below the loudest it has heard, and
    /// had heard only the noise.)
    @Test func aFaintNoiseFloorBeforeAnyoneSpeaksIsAPause() throws {
        let (sent, paused, encoded) = try Self.send(
            dtx: true, silentFrames: 10, lead: 100, complexity: AudioSender.defaultComplexity)
        #expect(sent[0..<10].allSatisfy { $0 != nil }, "the hangover is sent")
        #expect(sent[10..<100].allSatisfy { $0 == nil }, "sent in the pause: \(sent[10..<100].compactMap { $0 }.count)")
        #expect(paused[10..<100].allSatisfy { $0 })
        #expect(encoded[99] == 10)
        // The first word goes out at once, numbered straight after the hangover.
        #expect(sent[100]?.sequence == 110)
        #expect(sent[100]?.timestamp == UInt32(100 * Loopback.frame))
        #expect(!paused[100])
    }

    /// libopus' voice activity detector (complexity 5) calls a steady tone "not speech" within a
    /// second and its DTX would pause it; a loud signal must keep flowing all the same.
    @Test func aLoudSteadyToneIsNeverPaused() throws {
        let sender = try AudioSender(frameDuration: .ms20, complexity: Self.complexity, dtx: true)
        let tone = Loopback.tone(440, frames: 250)
        var sent = 0
        for index in 0..<250 {
            try tone[(index * Loopback.frame)..<((index + 1) * Loopback.frame)].withUnsafeBufferPointer { pcm in
                try sender.process(pcm) { _ in sent += 1 }
            }
            #expect(!sender.isPausedByDTX)
        }
        #expect(sent == 250)
    }

    @Test func withoutDTXEveryFrameIsSent() throws {
        let (sent, paused, _) = try Self.send(dtx: false, silentFrames: 100)
        #expect(sent.allSatisfy { $0 != nil })
        #expect(paused.allSatisfy { !$0 })
        #expect(sent.last??.sequence == 100 &+ 199)
        let (withNoise, _, _) = try Self.send(dtx: false, silentFrames: 0, lead: 100)
        #expect(withNoise.allSatisfy { $0 != nil })
    }

    /// 1 s of tone, `silentFrames` of silence, 1 s of tone through a DTX sender and a receive
    /// channel (each payload arrives at once); what the channel played, frame by frame.
    static func loopback(silentFrames: Int) throws -> (output: [Int16], statistics: ReceiveStatistics) {
        let input =
            Loopback.tone(500, frames: 50) + [Int16](repeating: 0, count: silentFrames * Loopback.frame)
            + Loopback.tone(500, frames: 50)
        return try Loopback.run(input, policy: RedundancyPolicy(), loss: 0, complexity: Self.complexity, dtx: true)
    }

    @Test func theReceiverPlaysThePauseAsSilenceNotLoss() throws {
        let (output, statistics) = try Self.loopback(silentFrames: 100)
        #expect(statistics.lost == 0 && statistics.expected == statistics.received, "\(statistics)")
        // The tone plays before and after the pause; the middle of the pause is silent.
        #expect(Loopback.power(500, in: output, frame: 30) > 0.01)
        #expect(Loopback.power(500, in: output, frame: 180) > 0.01)
        #expect(output[(110 * Loopback.frame)..<(140 * Loopback.frame)].allSatisfy { abs(Int($0)) < 64 })
    }

    /// A pause shorter than the receiver's idle limit (400 ms) is only recognised when speech
    /// resumes; it must not turn into delay. 15–30 silent frames: 5–20 of them not sent.
    @Test(arguments: [15, 20, 25, 30, 60]) func speechAfterAPauseIsNotDelayed(silentFrames: Int) throws {
        let (output, _) = try Self.loopback(silentFrames: silentFrames)
        let resumed = 50 + silentFrames
        let heard = (resumed..<(output.count / Loopback.frame)).first {
            Loopback.power(500, in: output, frame: $0) > 0.01
        }
        // Before the pause the tone is heard 2 frames after it is sent (the receive tick's phase
        // and Opus' lookahead); after it, no later.
        #expect(
            heard.map { $0 - resumed <= 2 } == true,
            "sent again at frame \(resumed), heard at \(String(describing: heard))")
    }
}
