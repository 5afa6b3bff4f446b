public import ParleyCore
public import ParleyProtocol

/// The two chat streams between this node and one peer (docs/PROTOCOL.md §14.1): ours to it
/// (numbered pieces kept until acknowledged, retransmitted with back-off) and its to us (an
/// ordered reassembly buffer that drops duplicates). A plain value with made-up times, tested by
/// tables; the core holds one per peer identity for as long as the peer keeps its session epoch,
/// so ICE restarts, new handshakes, relaying and even a new link change nothing in the numbering.
public struct ChatStreams: Sendable {
    /// Pieces in flight (sent, not acknowledged) at most: the rest wait their turn.
    public static let sendWindow = 16
    /// Pieces kept for a peer at most (64 messages of the largest size); beyond it the oldest
    /// whole messages are given up (a peer unreachable that long would not want them all).
    public static let maximumQueuedPieces = 256
    /// How far ahead of the next expected piece a receiver buffers (a sender keeps at most
    /// `sendWindow` in flight; the margin is for a sender with another window).
    public static let receiveWindow: UInt32 = 64
    /// Retransmission: the first timeout is twice the round-trip time, at least this, doubling
    /// after each timeout up to `maximumRetransmitTimeout`.
    public static let minimumRetransmitTimeout = Duration.milliseconds(200)
    public static let maximumRetransmitTimeout = Duration.seconds(5)

    /// The peer's session epoch (§5.1) these streams belong to: a new epoch is a new process
    /// that knows nothing of them.
    public let epoch: UInt64

    // Sending
    /// The sequence the next piece gets.
    public private(set) var nextSequence: UInt32 = 1
    /// Pieces not yet acknowledged, in sequence order (`first` is filled in when sent).
    public private(set) var queue: [SessionControl.Chat] = []
    /// How many pieces at the head of `queue` were sent at least once.
    public private(set) var inFlight = 0
    /// When the pieces in flight are sent again, if nothing acknowledges them first.
    public private(set) var retransmitAt: Instant?
    private var timeouts = 0

    // Receiving
    /// Every piece up to this one arrived (or was given up by the sender).
    public private(set) var received: UInt32 = 0
    private var ahead: [UInt32: SessionControl.Chat] = [:]
    /// The message being put together from pieces, and whether it is already too long.
    private var partial: [UInt8] = []
    private var oversized = false

    public init(epoch: UInt64) { self.epoch = epoch }

    // MARK: Sending

    /// Numbers a message's pieces and queues them; the caller checked its size (1...4096 bytes).
    /// Gives up the oldest whole messages when the queue would grow past its limit.
    public mutating func enqueue(_ text: [UInt8]) {
        var start = 0
        while start < text.count {
            let end = min(text.count, start + SessionControl.Chat.maximumPieceBytes)
            queue.append(
                SessionControl.Chat(
                    sequence: nextSequence, first: 0, more: end < text.count, text: Array(text[start..<end])))
            nextSequence += 1  // 2^32 − 1 pieces per stream: never reached (§14.1)
            start = end
        }
        while queue.count > Self.maximumQueuedPieces {
            let messageEnd = (queue.firstIndex { !$0.more } ?? queue.count - 1) + 1
            queue.removeFirst(messageEnd)
            inFlight = max(0, inFlight - messageEnd)
        }
        if inFlight == 0 { retransmitAt = nil }
    }

    /// The oldest sequence still held: what CHAT's `first` says (§14.1).
    var first: UInt32 { queue.first?.sequence ?? nextSequence }

    /// Pieces that may go out now for the first time (within the window); starts the
    /// retransmission timer if it is not running.
    public mutating func transmit(now: Instant, rttMs: Double?) -> [SessionControl.Chat] {
        let end = min(queue.count, Self.sendWindow)
        guard inFlight < end else { return [] }
        let fresh = queue[inFlight..<end].map { stamped($0) }
        inFlight = end
        if retransmitAt == nil { retransmitAt = now + timeout(rttMs: rttMs) }
        return fresh
    }

    /// The retransmission timer fired: every piece in flight again, and the next wait doubles.
    public mutating func retransmit(now: Instant, rttMs: Double?) -> [SessionControl.Chat] {
        guard inFlight > 0 else {
            retransmitAt = nil
            return []
        }
        timeouts += 1
        retransmitAt = now + timeout(rttMs: rttMs)
        return queue[..<inFlight].map { stamped($0) }
    }

    /// The session with the peer works again (new keys): what was in flight goes out at once.
    public mutating func resume(now: Instant) {
        guard inFlight > 0 else { return }
        timeouts = 0
        retransmitAt = now
    }

    /// CHAT_ACK: everything up to `cumulative` arrived. Returns whether it acknowledged anything
    /// new (then more pieces may go out).
    @discardableResult
    public mutating func acknowledged(_ cumulative: UInt32, now: Instant, rttMs: Double?) -> Bool {
        // Only sequences we sent count: an acknowledgement of the future is a confused peer.
        let done = queue[..<inFlight].prefix { $0.sequence <= cumulative }.count
        guard done > 0 else { return false }
        queue.removeFirst(done)
        inFlight -= done
        timeouts = 0
        retransmitAt = inFlight > 0 ? now + timeout(rttMs: rttMs) : nil
        return true
    }

    private func stamped(_ piece: SessionControl.Chat) -> SessionControl.Chat {
        var piece = piece
        piece.first = first
        return piece
    }

    private func timeout(rttMs: Double?) -> Duration {
        var base = Self.minimumRetransmitTimeout
        if let rttMs, rttMs.isFinite, rttMs > 0 { base = max(base, .milliseconds(Int64(2 * rttMs))) }
        var value = base
        for _ in 0..<min(timeouts, 16) where value < Self.maximumRetransmitTimeout { value *= 2 }
        return min(value, Self.maximumRetransmitTimeout)
    }

    // MARK: Receiving

    /// What one CHAT piece from the peer gives: the messages it completed, in order (valid
    /// UTF-8 of 1...4096 bytes; others are dropped), and the CHAT_ACK to answer with.
    public struct Received: Sendable, Hashable {
        public var messages: [String] = []
        /// The cumulative acknowledgement, always sent back (a duplicate means ours was lost).
        public var acknowledge: UInt32 = 0
        /// Messages that were complete but not valid UTF-8 or too long.
        public var dropped = 0
    }

    public mutating func receive(_ piece: SessionControl.Chat) -> Received {
        var result = Received()
        if UInt64(piece.first) > UInt64(received) + 1 {
            // The sender gave up what we still wait for (§14.1): skip to its oldest.
            received = piece.first - 1
            ahead = ahead.filter { $0.key > received }
            partial = []
            oversized = false
        }
        let distance = Int64(piece.sequence) - Int64(received)
        if distance >= 1, distance <= Int64(Self.receiveWindow), ahead[piece.sequence] == nil {
            ahead[piece.sequence] = piece
        }
        while received < UInt32.max, let next = ahead.removeValue(forKey: received + 1) {
            received += 1
            if !oversized {
                partial += next.text
                if partial.count > SessionControl.Chat.maximumMessageBytes {
                    oversized = true
                    partial = []
                }
            }
            guard !next.more else { continue }
            if !oversized, let text = String(validating: partial, as: UTF8.self) {
                result.messages.append(text)
            } else {
                result.dropped += 1
            }
            partial = []
            oversized = false
        }
        result.acknowledge = received
        return result
    }
}

/// One line of the meeting's chat as this node saw it (`parley chat`, `status`).
public struct ChatEntry: Sendable, Hashable {
    /// When it arrived (or was sent, for our own), on the core's clock.
    public var at: Instant
    /// The short id and the name of the sender, from its authenticated session (never from the
    /// message).
    public var fromID: String
    public var name: String
    public var text: String

    public init(at: Instant, fromID: String, name: String, text: String) {
        self.at = at
        self.fromID = fromID
        self.name = name
        self.text = text
    }
}

/// Why `parley say` did not send.
public enum ChatRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    case empty
    case tooLong(bytes: Int)
    case tooFast
    case notInMeeting

    public var description: String {
        switch self {
        case .empty: "the message is empty"
        case .tooLong(let bytes):
            "the message is \(bytes) bytes of UTF-8; at most \(SessionControl.Chat.maximumMessageBytes) fit in one message"
        case .tooFast:
            "sending too fast: at most \(Int(ChatLimits.burst)) messages at once, then \(Int(ChatLimits.perSecond)) a second; try again in a moment"
        case .notInMeeting: "not in a meeting"
        }
    }
}

/// Who a message went to.
public struct ChatDelivery: Sendable, Hashable {
    /// Names of the members it is on its way to (over their sessions, reliably).
    public var recipients: [String]
    /// Names of members whose Parley is too old for chat (their link's version is below 3).
    public var unreachable: [String]

    public init(recipients: [String], unreachable: [String]) {
        self.recipients = recipients
        self.unreachable = unreachable
    }
}

/// The sender's rate limit and the log's length (§14.1).
public enum ChatLimits {
    public static let burst = 10.0
    public static let perSecond = 1.0
    /// Messages kept for `status` and `parley chat`.
    public static let logLength = 50
}

extension String {
    /// The text with control characters other than tab and newline (C0, DEL, C1) replaced by
    /// U+FFFD: a member must not be able to send a terminal escape sequence to another's screen.
    var displayableChat: String {
        var scalars = String.UnicodeScalarView()
        for scalar in unicodeScalars {
            let value = scalar.value
            let control = (value < 0x20 && value != 0x09 && value != 0x0A) || (0x7F...0x9F).contains(value)
            scalars.append(control ? "\u{FFFD}" : scalar)
        }
        return String(scalars)
    }
}
