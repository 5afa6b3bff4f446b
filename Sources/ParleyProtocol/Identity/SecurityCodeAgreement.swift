import ParleyCore
public import Sodium

/// How a node arrives at the meeting security code (docs/PROTOCOL.md §11.1): a hash commitment
/// per view, as ZRTP commits to its Diffie-Hellman value (RFC 6189 §4.4.1.1), so that someone in
/// the middle, who picks keys and nonces on both sides, must commit to its nonce before it learns
/// any honest nonce of the view and gets one guess at a matching code per round — no offline work
/// helps. A plain state machine: feed it view changes and the COMMIT/REVEAL messages peers send,
/// and send what it returns; it never reads a clock and never does I/O.
///
/// Rules (each node, for its own view):
/// - Every change of the view starts a new round, numbered one above the node's current round,
///   with a fresh random 32-byte nonce; the node sends COMMIT (its commitment) to every member.
/// - A message for the node's view with a higher round (at most 2^32 higher) is followed: the node
///   moves to that round with a fresh nonce. A message of a lower round is answered with the
///   node's own current message, so the sender follows.
/// - Within a round, the first commitment heard from a member counts (a REVEAL counts as a
///   commitment when none is held); a REVEAL whose nonce does not match it is ignored.
/// - The node reveals its nonce (REVEAL, to every member) only once it holds a commitment from
///   every other member of the view for this round; once it also holds every member's nonce it
///   shows the code (it is *complete*).
/// - While not complete it repeats its current message with every REPORT; once complete it
///   answers a member's message that is not complete with its own.
public struct SecurityCodeAgreement: Sendable {
    /// A message for one peer's session.
    public struct Outgoing: Sendable, Hashable {
        public let peer: [UInt8]
        public let message: SecurityCodeMessage
    }

    public enum State: Sendable, Hashable {
        /// No code yet for this view: waiting for these members' commitments or nonces.
        case settling(waitingFor: [[UInt8]])
        /// Every member's nonce is in: the code to read aloud.
        case agreed(SecurityCode)
        /// The view cannot have a code (shown as is).
        case unavailable(String)
    }

    /// How far above its own round a message may take a node: far more than honest meetings
    /// ever diverge, and a member who pushes rounds up needs 2^32 steps to exhaust them.
    public static let maximumRoundStep: UInt64 = 1 << 32

    public let roomID: [UInt8]
    public let me: CodeMember
    public private(set) var state: State = .settling(waitingFor: [])
    public private(set) var view: SecurityCodeView?
    public private(set) var round: UInt64 = 0
    private let makeNonce: @Sendable () -> [UInt8]
    private var nonce: [UInt8] = []
    private var revealed = false
    /// For `view` and `round`: commitments and nonces by member identity key.
    private var commitments: [[UInt8]: [UInt8]] = [:]
    private var nonces: [[UInt8]: [UInt8]] = [:]
    /// The latest message from each sender, for a round the node may enter later.
    private var latest: [[UInt8]: SecurityCodeMessage] = [:]

    /// `me`: this node's identity key and display name. `nonces` gives fresh 32-byte nonces
    /// (random; fixed ones for test vectors).
    public init(
        roomID: [UInt8], me: CodeMember, nonces: @escaping @Sendable () -> [UInt8] = { RandomBytes.bytes(count: 32) }
    ) {
        self.roomID = roomID
        self.me = me
        makeNonce = nonces
    }

    /// The code, once agreed.
    public var code: SecurityCode? {
        if case .agreed(let code) = state { code } else { nil }
    }

    // MARK: Inputs

    /// The meeting changed: `peers` are every member with an established session (not this
    /// node), with their display names. Returns the messages to send.
    public mutating func viewChanged(peers: [CodeMember]) -> [Outgoing] {
        let next: SecurityCodeView
        do {
            next = try SecurityCodeView(roomID: roomID, members: peers + [me])
        } catch {
            view = nil
            state = .unavailable(error.description)
            return []
        }
        guard next != view else { return [] }
        guard round < UInt64.max else {
            view = nil
            state = .unavailable("the security code's rounds are exhausted; restart the meeting")
            return []
        }
        view = next
        latest = latest.filter { next.contains($0.key) }
        // Members already in this view at a higher round are followed at once.
        let higher = latest.values.filter { $0.viewHash == next.hash && isFollowable($0.round) }.map(\.round).max()
        startRound(max(round + 1, higher ?? 0))
        recordStoredMessages()
        return progress(announce: true)
    }

    /// A COMMIT or REVEAL arrived over `sender`'s session. Returns the messages to send.
    public mutating func received(_ message: SecurityCodeMessage, from sender: [UInt8]) -> [Outgoing] {
        guard sender != me.identityKey else { return [] }
        latest[sender] = message
        guard let view, view.contains(sender), message.viewHash == view.hash else { return [] }
        if message.round < round { return [Outgoing(peer: sender, message: currentMessage(in: view))] }
        if message.round > round {
            guard isFollowable(message.round) else { return [] }
            startRound(message.round)
            recordStoredMessages()
            return progress(announce: true)
        }
        record(message, from: sender, in: view)
        var outgoing = progress(announce: false)
        if isComplete, !message.isComplete, !outgoing.contains(where: { $0.peer == sender }) {
            outgoing.append(Outgoing(peer: sender, message: currentMessage(in: view)))
        }
        return outgoing
    }

    /// What to repeat to `peer` with a REPORT: the current message while this node is not
    /// complete (a message may have been lost), else nothing.
    public func repeated(to peer: [UInt8]) -> SecurityCodeMessage? {
        guard let view, !isComplete, peer != me.identityKey, view.contains(peer) else { return nil }
        return currentMessage(in: view)
    }

    // MARK: Rounds

    private var isComplete: Bool { code != nil }

    private func isFollowable(_ other: UInt64) -> Bool {
        other > round && other - round <= Self.maximumRoundStep
    }

    private mutating func startRound(_ number: UInt64) {
        round = number
        nonce = makeNonce()
        revealed = false
        commitments = [:]
        nonces = [:]
        state = .settling(waitingFor: [])
    }

    private mutating func recordStoredMessages() {
        guard let view else { return }
        for (sender, message) in latest where message.viewHash == view.hash && message.round == round {
            record(message, from: sender, in: view)
        }
    }

    private mutating func record(_ message: SecurityCodeMessage, from sender: [UInt8], in view: SecurityCodeView) {
        switch message {
        case .commit(let commit):
            if commitments[sender] == nil { commitments[sender] = commit.commitment }
        case .reveal(let reveal):
            let opened = view.commitment(of: reveal.nonce, by: sender, round: round)
            if let held = commitments[sender] {
                guard Sodium.constantTimeEqual(held, opened) else { return }
            } else {
                commitments[sender] = opened
            }
            nonces[sender] = reveal.nonce
        }
    }

    /// Reveals when every commitment is in, shows the code when every nonce is; with `announce`
    /// (a new round) or on revealing, the current message goes to every member.
    private mutating func progress(announce: Bool) -> [Outgoing] {
        guard let view else { return [] }
        let others = view.members.map(\.identityKey).filter { $0 != me.identityKey }
        var changed = announce
        if !revealed, others.allSatisfy({ commitments[$0] != nil }) {
            revealed = true
            changed = true
        }
        if revealed, others.allSatisfy({ nonces[$0] != nil }) {
            let ordered = view.members.map { $0.identityKey == me.identityKey ? nonce : nonces[$0.identityKey]! }
            state = .agreed(SecurityCode(viewHash: view.hash, nonces: ordered))
        } else {
            let missing = others.filter { (revealed ? nonces[$0] : commitments[$0]) == nil }
            state = .settling(waitingFor: missing)
        }
        guard changed else { return [] }
        let message = currentMessage(in: view)
        return others.map { Outgoing(peer: $0, message: message) }
    }

    private func currentMessage(in view: SecurityCodeView) -> SecurityCodeMessage {
        if revealed {
            return .reveal(.init(viewHash: view.hash, round: round, nonce: nonce, complete: isComplete))
        }
        return .commit(
            .init(
                viewHash: view.hash, round: round,
                commitment: view.commitment(of: nonce, by: me.identityKey, round: round)))
    }
}
