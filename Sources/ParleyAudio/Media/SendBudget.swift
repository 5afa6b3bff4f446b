/// How the sender fits its encoding into the rate a peer's path takes (the send-side bandwidth
/// estimate, `MeetingCore.SendRate`): the Opus bitrate and how many captured frames go in one
/// packet.
///
/// A media packet costs 71 bytes besides its Opus data, so at 20 ms frames the headers alone are
/// 28.4 kb/s per peer: more than the audio once the budget gets tight. Longer packets cost fewer
/// headers (9.5 kb/s at 60 ms) and add their length to mouth-to-ear, so the sender keeps its
/// frame as long as the Opus bitrate stays at or above `comfortableBitrate` (PESQ-WB about 3.7 for
/// speech here; 3.4 at 12 kb/s, 2.3 at 8 kb/s, whatever the packet length), and lengthens packets
/// only when that is what keeps the bitrate up.
public struct SendBudget: Sendable, Hashable {
    /// Captured frames per packet: the packet lasts `packetFrames × frame`.
    public var packetFrames: Int
    public var opusBitrate: Int

    public init(packetFrames: Int, opusBitrate: Int) {
        self.packetFrames = packetFrames
        self.opusBitrate = opusBitrate
    }

    /// Bytes a media packet costs on the wire besides its Opus data: IPv4 and UDP (28), the
    /// transport header and tag (PROTOCOL §8.2: 16 + 16), the inner type (1) and the media
    /// payload's header (§9.1: 10).
    public static let packetOverhead = 71
    /// Each RFC 2198 copy adds its block header (§9.1) to the copied frame.
    public static let copyOverhead = 6
    /// The Opus bitrate a new packet length is chosen for: the shortest packets that leave this much.
    public static let comfortableBitrate = 16_000
    /// The packet length in use is kept while it leaves at least this much and no shorter one
    /// leaves 15 % more than comfortable: an estimate that saws up and down by its ±15 % (the
    /// bandwidth estimate probing for room) does not switch lengths, each switch costing the
    /// listeners' jitter buffers a re-adjustment.
    public static let keepBitrate = 12_000
    /// Opus' lowest useful bitrate for wideband speech.
    public static let minimumBitrate = 6_000
    /// Packets last at most this long (Opus' longest single frame; PROTOCOL §9.1's longest duration).
    public static let longestPacketMilliseconds = 60

    /// Bits per second one peer receives from us for `opusBitrate` in packets of `packetMilliseconds`
    /// with `copies` copies of previous frames in each, and `extraPacketBytes` more in each packet
    /// (a signed frame's counter and signature while one copy goes up, PROTOCOL §15.1).
    public static func wireRate(
        opusBitrate: Int, packetMilliseconds: Int, copies: Int = 0, extraPacketBytes: Int = 0
    ) -> Int {
        let packetsPerSecond = 1000 / Double(packetMilliseconds)
        let headers = packetsPerSecond * Double(8 * (packetOverhead + extraPacketBytes + copies * copyOverhead))
        return Int((headers + Double(opusBitrate * (1 + copies))).rounded())
    }

    /// The packet lengths a sender capturing `frameMilliseconds` frames can send: its frame, and
    /// 20, 40 and 60 ms where they are whole multiples of it.
    public static func packetLengths(frameMilliseconds: Int) -> [Int] {
        [frameMilliseconds] + longerPackets.filter { isLonger($0, than: frameMilliseconds) }
    }

    static let longerPackets = [20, 40, 60]

    static func isLonger(_ milliseconds: Int, than frame: Int) -> Bool {
        milliseconds > frame && milliseconds % frame == 0
    }

    /// The shortest of `packetLengths` that `accept` takes, without building the list: `fit`
    /// runs on the capture thread, which does not allocate.
    static func firstLength(frameMilliseconds frame: Int, where accept: (Int) -> Bool) -> Int? {
        if accept(frame) { return frame }
        for milliseconds in longerPackets where isLonger(milliseconds, than: frame) && accept(milliseconds) {
            return milliseconds
        }
        return nil
    }

    /// The encoding that fits `budget` bits per second per peer (nil: no limit).
    ///
    /// - Parameters:
    ///   - current: the packet frames in use (see `keepBitrate`).
    ///   - extraPacketBytes: what each packet carries besides `packetOverhead` (`wireRate`).
    public static func fit(
        budget: Int?, maximumBitrate: Int, frameMilliseconds: Int, copies: Int, current: Int = 1,
        extraPacketBytes: Int = 0
    ) -> SendBudget {
        guard let budget else { return SendBudget(packetFrames: 1, opusBitrate: maximumBitrate) }
        func opus(_ milliseconds: Int) -> Int {
            let headers = wireRate(
                opusBitrate: 0, packetMilliseconds: milliseconds, copies: copies, extraPacketBytes: extraPacketBytes)
            return (budget - headers) / (1 + copies)
        }
        let currentLength = current * frameMilliseconds
        let shorter = firstLength(frameMilliseconds: frameMilliseconds) {
            $0 < currentLength && opus($0) >= min(maximumBitrate, comfortableBitrate * 115 / 100)
        }
        let sendable = currentLength == frameMilliseconds || longerPackets.contains(currentLength)
        let keep = sendable && opus(currentLength) >= min(maximumBitrate, keepBitrate)
        let longest = longerPackets.last { isLonger($0, than: frameMilliseconds) } ?? frameMilliseconds
        let chosen =
            shorter ?? (keep ? currentLength : nil)
            ?? firstLength(frameMilliseconds: frameMilliseconds) { opus($0) >= min(maximumBitrate, comfortableBitrate) }
            ?? longest
        return SendBudget(
            packetFrames: chosen / frameMilliseconds,
            opusBitrate: min(maximumBitrate, max(minimumBitrate, opus(chosen))))
    }
}
