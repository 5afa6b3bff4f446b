public import ParleyCore

/// Session control messages (docs/PROTOCOL.md §10): the plaintext after `inner_type = 0x02` in a
/// transport packet, `control_type: u8 || body`. Longer bodies are accepted (fields may be
/// appended in later versions); unknown types are ignored.
public enum SessionControl: Sendable, Hashable {
    case report(Report)
    case leave
    /// Which members the sender has working links with (0x05, §13.1, version 2).
    case links(Links)
    /// The sender will not carry what we asked it to relay to `destination` (0x06, §13.3, version 2).
    case relayRefused(destination: [UInt8], reason: RelayRefusal)
    /// COMMIT (0x03) or REVEAL (0x04) of the security code agreement (§11.1).
    case securityCode(SecurityCodeMessage)
    /// One piece of a chat message (0x07, §14.1, version 3).
    case chat(Chat)
    /// Every chat piece up to `cumulative` arrived (0x08, §14.1, version 3).
    case chatAck(cumulative: UInt32)
    /// RECORDING (0x09, §14.2, version 3): whether the sender records the meeting from now on.
    case recording(Bool)
    /// A control type this version does not know (§10: ignored).
    case unknown(UInt8)

    public static let reportType: UInt8 = 0x01
    public static let leaveType: UInt8 = 0x02
    public static let linksType: UInt8 = 0x05
    public static let relayRefusedType: UInt8 = 0x06
    /// Version 3 (§14): chat and the recording notice.
    public static let chatType: UInt8 = 0x07
    public static let chatAckType: UInt8 = 0x08
    public static let recordingType: UInt8 = 0x09
    /// Bit 0 of RECORDING's `flags` (§14.2).
    public static let recordingFlag: UInt8 = 0x01

    /// LINKS (§13.1): the members whose links with the sender are up (directly, not themselves
    /// relayed), with the sender's smoothed RTT to each, and whether it relays for others.
    public struct Links: Sendable, Hashable {
        public static let maximumPeers = 255
        public var relays: Bool
        public var peers: [Peer]

        public struct Peer: Sendable, Hashable {
            public var identityKey: [UInt8]
            /// Milliseconds, 0xFFFF when not measured yet.
            public var rttMs: UInt16
            public init(identityKey: [UInt8], rttMs: UInt16) {
                self.identityKey = identityKey
                self.rttMs = rttMs
            }
        }

        public init(relays: Bool, peers: [Peer]) {
            self.relays = relays
            self.peers = Array(peers.prefix(Self.maximumPeers))
        }
    }

    /// CHAT (§14.1): one piece of a message, numbered in the sender's stream to this receiver.
    /// A message of up to `maximumMessageBytes` goes in pieces of at most `maximumPieceBytes`
    /// (so every packet fits a relay's FORWARD, §13.2, and no path needs IP fragments); `more`
    /// says the next sequence continues it.
    public struct Chat: Sendable, Hashable {
        public static let maximumMessageBytes = 4096
        public static let maximumPieceBytes = 1024
        /// Bit 0 of `flags`.
        public static let moreFlag: UInt8 = 0x01

        public var sequence: UInt32
        /// The oldest sequence the sender still holds for this receiver: everything before it was
        /// acknowledged or given up (§14.1), so the receiver skips what it still waits for below.
        public var first: UInt32
        public var more: Bool
        /// 1...`maximumPieceBytes` bytes of the message's UTF-8 (a piece may split a character).
        public var text: [UInt8]

        public init(sequence: UInt32, first: UInt32, more: Bool, text: [UInt8]) {
            self.sequence = sequence
            self.first = first
            self.more = more
            self.text = text
        }
    }

    /// Why a relay refused (§13.3).
    public enum RelayRefusal: UInt8, Sendable, Hashable {
        /// It has no working link with the destination.
        case notLinked = 1
        /// It already carries as many pairs as it will.
        case busy = 2
        /// It does not relay for others (`--relay-only`, or `--relay-pairs 0`).
        case declines = 3
    }

    /// The REPORT body (§10.1), 28 bytes.
    public struct Report: Sendable, Hashable {
        /// What Parley sends; 28 bytes (no `queue_delay_ms`) is the shortest a receiver accepts.
        public static let length = 30
        /// Bit 0 of `flags`.
        public static let mutedFlag: UInt8 = 0x01
        /// Bit 1 of `flags` (version 3 links only, §14.2): the sender records the meeting.
        public static let recordingFlag: UInt8 = 0x02

        /// The sender's monotonic clock in milliseconds (mod 2^32); never 0, which means "none".
        public var timestampMs: UInt32
        /// `timestampMs` of the latest REPORT received from the peer, or 0.
        public var echoTimestampMs: UInt32
        /// Milliseconds from receiving that REPORT to sending this one.
        public var echoDelayMs: UInt32
        public var mediaReceived: UInt32
        public var mediaExpected: UInt32
        /// Network loss over the last report interval, 0–1000.
        public var lossPermille: UInt16
        public var jitterMicroseconds: UInt32
        public var muted: Bool
        /// Bit 1 of `flags`; meaningful only on a version-3 link (§14.2), where it repeats the
        /// sender's RECORDING state once a second.
        public var recording: Bool
        /// How long our media waits in queues on the way to the peer, in milliseconds, as the peer
        /// measures it (§10.1 `queue_delay_ms`); nil: no estimate (none sent, or no media lately).
        public var queueDelayMs: UInt16?

        /// `queue_delay_ms` meaning "no estimate".
        public static let noQueueDelay: UInt16 = 0xFFFF

        public init(
            timestampMs: UInt32, echoTimestampMs: UInt32 = 0, echoDelayMs: UInt32 = 0, mediaReceived: UInt32 = 0,
            mediaExpected: UInt32 = 0, lossPermille: UInt16 = 0, jitterMicroseconds: UInt32 = 0, muted: Bool = false,
            recording: Bool = false, queueDelayMs: UInt16? = nil
        ) {
            self.recording = recording
            self.queueDelayMs = queueDelayMs.map { min($0, Self.noQueueDelay - 1) }
            self.timestampMs = timestampMs
            self.echoTimestampMs = echoTimestampMs
            self.echoDelayMs = echoDelayMs
            self.mediaReceived = mediaReceived
            self.mediaExpected = mediaExpected
            self.lossPermille = lossPermille
            self.jitterMicroseconds = jitterMicroseconds
            self.muted = muted
        }
    }

    /// `control_type || body`, ready to seal as a session control payload.
    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .report(let report):
            writer.writeU8(Self.reportType)
            writer.writeU32(report.timestampMs)
            writer.writeU32(report.echoTimestampMs)
            writer.writeU32(report.echoDelayMs)
            writer.writeU32(report.mediaReceived)
            writer.writeU32(report.mediaExpected)
            writer.writeU16(min(report.lossPermille, 1000))
            writer.writeU32(report.jitterMicroseconds)
            writer.writeU8((report.muted ? Report.mutedFlag : 0) | (report.recording ? Report.recordingFlag : 0))
            writer.writeU8(0)
            writer.writeU16(report.queueDelayMs ?? Report.noQueueDelay)
        case .leave:
            writer.writeU8(Self.leaveType)
        case .links(let links):
            writer.writeU8(Self.linksType)
            writer.writeU8(links.relays ? 1 : 0)
            writer.writeU8(UInt8(links.peers.count))
            for peer in links.peers {
                writer.writeBytes(peer.identityKey)
                writer.writeU16(peer.rttMs)
            }
        case .relayRefused(let destination, let reason):
            writer.writeU8(Self.relayRefusedType)
            writer.writeBytes(destination)
            writer.writeU8(reason.rawValue)
        case .securityCode(let message):
            writer.writeBytes(message.encoded())
        case .chat(let chat):
            writer.writeU8(Self.chatType)
            writer.writeU32(chat.sequence)
            writer.writeU32(chat.first)
            writer.writeU8(chat.more ? Chat.moreFlag : 0)
            writer.writeBytes(chat.text)
        case .chatAck(let cumulative):
            writer.writeU8(Self.chatAckType)
            writer.writeU32(cumulative)
        case .recording(let recording):
            writer.writeU8(Self.recordingType)
            writer.writeU8(recording ? Self.recordingFlag : 0)
        case .unknown(let type):
            writer.writeU8(type)
        }
        return writer.bytes
    }

    /// Parses a session control payload. Throws for a known type with a short body, and for a
    /// CHAT that breaks §14.1's rules; extra trailing bytes are allowed (§10; a CHAT's text is
    /// the rest of the message).
    public init(parsing payload: some Collection<UInt8>) throws(WireFormatError) {
        var reader = ByteReader(Array(payload))
        let type = try reader.readU8("control type")
        if let message = try SecurityCodeMessage(controlType: type, body: &reader) {
            self = .securityCode(message)
            return
        }
        switch type {
        case Self.reportType:
            var report = Report(
                timestampMs: try reader.readU32("REPORT timestamp_ms"),
                echoTimestampMs: try reader.readU32("REPORT echo_timestamp_ms"),
                echoDelayMs: try reader.readU32("REPORT echo_delay_ms"),
                mediaReceived: try reader.readU32("REPORT media_received"),
                mediaExpected: try reader.readU32("REPORT media_expected"),
                lossPermille: min(try reader.readU16("REPORT loss_permille"), 1000),
                jitterMicroseconds: try reader.readU32("REPORT jitter_us"))
            let flags = try reader.readU8("REPORT flags")
            report.muted = flags & Report.mutedFlag != 0
            report.recording = flags & Report.recordingFlag != 0
            _ = try reader.readU8("REPORT reserved")
            if reader.remaining >= 2 {
                let queueDelay = try reader.readU16("REPORT queue_delay_ms")
                report.queueDelayMs = queueDelay == Report.noQueueDelay ? nil : queueDelay
            }
            self = .report(report)
        case Self.leaveType:
            self = .leave
        case Self.linksType:
            let relays = try reader.readU8("LINKS flags") & 1 != 0
            let count = Int(try reader.readU8("LINKS count"))
            var peers: [Links.Peer] = []
            for _ in 0..<count {
                let key = try reader.readBytes(32, "LINKS identity key")
                peers.append(Links.Peer(identityKey: key, rttMs: try reader.readU16("LINKS rtt_ms")))
            }
            self = .links(Links(relays: relays, peers: peers))
        case Self.relayRefusedType:
            let destination = try reader.readBytes(32, "RELAY_REFUSED destination")
            let code = try reader.readU8("RELAY_REFUSED reason")
            // An unknown reason from a newer peer is still a refusal.
            self = .relayRefused(destination: destination, reason: RelayRefusal(rawValue: code) ?? .declines)
        case Self.chatType:
            let sequence = try reader.readU32("CHAT sequence")
            let first = try reader.readU32("CHAT first")
            let flags = try reader.readU8("CHAT flags")
            let text = Array(reader.readRest())
            guard sequence != 0, first != 0, first <= sequence else {
                throw WireFormatError("CHAT sequence \(sequence) with first \(first): needs 1 ≤ first ≤ sequence")
            }
            guard (1...Chat.maximumPieceBytes).contains(text.count) else {
                throw WireFormatError("CHAT text of \(text.count) bytes: needs 1 to \(Chat.maximumPieceBytes)")
            }
            self = .chat(Chat(sequence: sequence, first: first, more: flags & Chat.moreFlag != 0, text: text))
        case Self.chatAckType:
            self = .chatAck(cumulative: try reader.readU32("CHAT_ACK cumulative"))
        case Self.recordingType:
            // Other bits are reserved and ignored (§14.2).
            self = .recording(try reader.readU8("RECORDING flags") & Self.recordingFlag != 0)
        case let other:
            self = .unknown(other)
        }
    }
}

/// Round-trip time from REPORT echoes (§10.1, RTCP's LSR/DLSR of RFC 3550 §6.4.1): remembers the
/// latest REPORT received to echo it, and measures the RTT from the peer's echoes of ours, all on
/// the node's own monotonic clock in milliseconds (mod 2^32). Smoothed as RFC 6298 smooths
/// TCP's RTT (α = 1/8) so the status display does not flicker.
public struct ReportEcho: Sendable {
    /// Echoes above this are discarded (a clock wrap or a garbled report, not a real path).
    public static let maximumRTTMs: UInt32 = 60_000

    private var lastPeerTimestamp: UInt32 = 0
    private var lastReceivedAtMs: UInt32 = 0
    /// The latest measured RTT and its smoothed value, in milliseconds.
    public private(set) var latestRTTMs: Double?
    public private(set) var smoothedRTTMs: Double?

    public init() {}

    /// Our clock as REPORT writes it: milliseconds mod 2^32, but never 0 (0 means "no echo").
    public static func timestamp(milliseconds: UInt64) -> UInt32 {
        let value = UInt32(truncatingIfNeeded: milliseconds)
        return value == 0 ? 1 : value
    }

    /// Records a REPORT from the peer received at `nowMs` (our clock); returns the RTT it
    /// measured, if it echoed one of ours.
    @discardableResult
    public mutating func received(_ report: SessionControl.Report, nowMs: UInt32) -> Double? {
        lastPeerTimestamp = report.timestampMs
        lastReceivedAtMs = nowMs
        guard report.echoTimestampMs != 0 else { return nil }
        let rtt = nowMs &- report.echoTimestampMs &- report.echoDelayMs
        guard rtt <= Self.maximumRTTMs else { return nil }
        let sample = Double(rtt)
        latestRTTMs = sample
        smoothedRTTMs = smoothedRTTMs.map { $0 + (sample - $0) / 8 } ?? sample
        return sample
    }

    /// The echo fields for a REPORT we send at `nowMs`.
    public func echo(nowMs: UInt32) -> (timestampMs: UInt32, delayMs: UInt32) {
        guard lastPeerTimestamp != 0 else { return (0, 0) }
        return (lastPeerTimestamp, nowMs &- lastReceivedAtMs)
    }
}
