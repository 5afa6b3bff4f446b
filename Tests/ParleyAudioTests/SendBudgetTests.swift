import ParleyAudio
import ParleyCore
import ParleyProtocol
import ParleyTestSupport
import Testing

/// The sender fits its encoding into the rate the path takes (`SendBudget`): the table of choices,
/// then the real encoder and receive channel with longer packets.
@Suite("Send budget: bitrate and packet length that fit the path")
struct SendBudgetTests {
    /// What a peer receives from us at the configured 32 kb/s in 20 ms packets: 50 × 71 bytes of
    /// headers (28.4 kb/s) and the Opus data.
    @Test func theWireRateCountsEveryHeader() {
        #expect(SendBudget.wireRate(opusBitrate: 32_000, packetMilliseconds: 20) == 60_400)
        #expect(SendBudget.wireRate(opusBitrate: 0, packetMilliseconds: 60) == 9_467)
        // A copy repeats the frame and adds its 6-byte block header.
        #expect(SendBudget.wireRate(opusBitrate: 20_000, packetMilliseconds: 20, copies: 1) == 70_800)
        #expect(SendBudget.packetLengths(frameMilliseconds: 10) == [10, 20, 40, 60])
        #expect(SendBudget.packetLengths(frameMilliseconds: 20) == [20, 40, 60])
        #expect(SendBudget.packetLengths(frameMilliseconds: 40) == [40])
    }

    @Test(
        arguments: [
            // budget (b/s per peer), current packet frames → packet frames, Opus bitrate
            (nil, 1, 1, 32_000),  // no limit: the configured encoding
            (60_400, 1, 1, 32_000),  // exactly the configured encoding's rate
            (50_000, 1, 1, 21_600),  // 20 ms still leaves a comfortable bitrate
            (36_571, 1, 2, 22_371),  // 256 kbit/s over 7 peers: 40 ms packets
            (18_286, 1, 3, 8_819),  // 128 kbit/s over 7 peers: 60 ms packets, all it can
            (12_000, 3, 3, 6_000),  // below what Opus can do: its floor in the longest packets
            // Shortening packets asks for 15 % more than comfortable: 20 ms would leave 16.6 kb/s.
            (45_000, 2, 2, 30_800),
            (45_000, 1, 1, 16_600),
            // A length in use is kept down to 12 kb/s (the estimate saws ±15 % while it probes): 40 ms
            // packets stay at 13.4 kb/s, where a sender at 20 ms would go to 60 ms ones.
            (27_600, 2, 2, 13_400),
            (27_600, 1, 3, 18_133),
        ] as [(Int?, Int, Int, Int)])
    func theEncodingFitsTheBudget(budget: Int?, current: Int, frames: Int, bitrate: Int) {
        let fit = SendBudget.fit(
            budget: budget, maximumBitrate: 32_000, frameMilliseconds: 20, copies: 0, current: current)
        #expect(fit == SendBudget(packetFrames: frames, opusBitrate: bitrate))
    }

    @Test func copiesAreCountedInTheBudget() {
        // (60 400 − 50 × 8 × 77) / 2 = 14 800 at 20 ms: enough to keep 20 ms packets.
        let kept = SendBudget.fit(budget: 60_400, maximumBitrate: 32_000, frameMilliseconds: 20, copies: 1)
        #expect(kept == SendBudget(packetFrames: 1, opusBitrate: 14_800))
        // (50 000 − 30 800) / 2 = 9 600 is not: 40 ms packets leave (50 000 − 15 400) / 2 = 17 300.
        let longer = SendBudget.fit(budget: 50_000, maximumBitrate: 32_000, frameMilliseconds: 20, copies: 1)
        #expect(longer == SendBudget(packetFrames: 2, opusBitrate: 17_300))
    }

    /// A tone through the real encoder under a budget of 256 kbit/s shared by 7 peers: 40 ms
    /// packets with consecutive timestamps, about the bitrate chosen, played without a gap; with
    /// the limit lifted the sender goes back to 20 ms packets at 32 kb/s.
    @Test func longerPacketsPlayWithoutAGap() throws {
        let clock = ManualClock(nanoseconds: 1_000_000_000)
        let sender = try AudioSender(frameDuration: .ms20, initialSequence: 7, initialTimestamp: 0)
        let channel = try ReceiveChannel(name: "budget", clock: clock)
        let input = Loopback.tone(700, frames: 150)
        var sent: [(timestamp: UInt32, duration: Int, bytes: Int, at: Int)] = []
        var output: [Int16] = []
        var playback = [Int16](repeating: 0, count: Loopback.frame)
        sender.setBudget(36_571)
        for index in 0..<150 {
            if index == 100 { sender.setBudget(nil) }
            clock.set(nanoseconds: 1_000_000_000 + UInt64(index) * 20_000_000)
            try input[(index * Loopback.frame)..<((index + 1) * Loopback.frame)].withUnsafeBufferPointer { pcm in
                try sender.process(pcm) { payload in
                    if let parsed = try? MediaPayload(parsing: payload) {
                        sent.append((parsed.timestamp, parsed.primary.duration, parsed.primary.range.count, index))
                    }
                    channel.receive(payload)
                }
            }
            clock.set(nanoseconds: 1_000_000_000 + UInt64(index) * 20_000_000 + 7_000_000)
            playback.withUnsafeMutableBufferPointer { channel.render(into: $0, now: clock.now()) }
            output += playback
        }
        let limited = sent.filter { $0.at < 100 }
        #expect(limited.count == 50)
        #expect(limited.allSatisfy { $0.duration == 1920 })
        #expect(zip(sent, sent.dropFirst()).allSatisfy { $1.timestamp &- $0.timestamp == UInt32($0.duration) })
        #expect(sender.encoding.opusBitrate == 32_000 && sender.encoding.packetMilliseconds == 20)
        let bitrate = Double(limited.dropFirst(5).reduce(0) { $0 + $1.bytes } * 8) / (Double(limited.count - 5) * 0.04)
        #expect(abs(bitrate - 22_371) < 0.3 * 22_371, "\(bitrate) b/s")
        #expect(sent.filter { $0.at >= 102 }.allSatisfy { $0.duration == 960 })
        // Nothing concealed between the first packet and the end of the input.
        #expect(channel.statistics.concealed == 0 && channel.statistics.lost == 0, "\(channel.statistics)")
        let first = try #require(output.firstIndex { abs(Int($0)) > 1000 }) / Loopback.frame
        for frame in (first + 2)..<149 {
            #expect(Loopback.power(700, in: output, frame: frame) > 0.005, "frame \(frame)")
        }
    }

    /// With DTX, a pause drops the frames held for a longer packet (they are quiet), and the first
    /// packet after it starts at the frame that ended the pause.
    @Test func aPauseDropsTheFramesHeldForAPacket() throws {
        let sender = try AudioSender(frameDuration: .ms20, dtx: true, initialSequence: 0, initialTimestamp: 0)
        sender.setBudget(18_286)  // 60 ms packets
        let input =
            Loopback.tone(500, frames: 30) + [Int16](repeating: 0, count: 40 * Loopback.frame)
            + Loopback.tone(500, frames: 30)
        var sent: [(timestamp: UInt32, duration: Int)] = []
        for index in 0..<100 {
            try input[(index * Loopback.frame)..<((index + 1) * Loopback.frame)].withUnsafeBufferPointer { pcm in
                try sender.process(pcm) { payload in
                    if let parsed = try? MediaPayload(parsing: payload) {
                        sent.append((parsed.timestamp, parsed.primary.duration))
                    }
                }
            }
        }
        #expect(sent.allSatisfy { $0.duration == 2880 })
        // The talk resumes at frame 70: its first packet holds frames 70–72.
        #expect(sent.contains { $0.timestamp == 70 * 960 })
        // 30 frames of tone and 10 of hangover (200 ms) before the pause: 13 packets, the 40th frame dropped.
        #expect(sent.filter { $0.timestamp < 70 * 960 }.count == 13)
        #expect(sent.filter { $0.timestamp >= 70 * 960 }.count == 10)
    }
}
