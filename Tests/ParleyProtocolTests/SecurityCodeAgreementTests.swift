import ParleyCore
import Synchronization
import Testing

@testable import ParleyProtocol

/// Nodes running `SecurityCodeAgreement` over simulated sessions: node i's view is the set of
/// nodes it has a session with (plus itself), changed by the test; messages queue and are
/// delivered in order or shuffled, or dropped on the way. Every send and delivery is logged, so
/// the commit-before-reveal rule can be checked from the outside.
struct CodeMeeting {
    struct Sent: Hashable {
        let from: Int
        let to: Int
        let message: SecurityCodeMessage
    }

    enum Event: Hashable {
        case view(node: Int, peers: [Int])
        case sent(Sent)
        case delivered(Sent)
        /// `run` began delivering what was in flight.
        case run
    }

    let roomID: [UInt8]
    var nodes: [SecurityCodeAgreement]
    let members: [CodeMember]
    /// links[i]: the nodes i has an established session with.
    var links: [Set<Int>]
    var inFlight: [Sent] = []
    var log: [Event] = []
    /// The members of every view hash a node has had.
    var viewMembers: [[UInt8]: Set<Int>] = [:]

    /// `count` nodes named n0, n1, … whose identity keys sort by index.
    init(_ count: Int) {
        self.init(
            members: (0..<count).map { index in
                CodeMember(identityKey: [UInt8(index + 1)] + Array(repeating: 0xEE, count: 31), name: "n\(index)")
            }, roomID: Array(repeating: 0x42, count: 32))
    }

    /// Nonces are deterministic: `nonces(index)`.
    init(members: [CodeMember], roomID: [UInt8]) {
        self.roomID = roomID
        self.members = members
        nodes = members.enumerated().map { index, member in
            SecurityCodeAgreement(roomID: roomID, me: member, nonces: Self.nonces(index))
        }
        links = Array(repeating: [], count: members.count)
    }

    /// 32-byte nonces that differ per node (`seed`) and per draw.
    static func nonces(_ seed: Int) -> @Sendable () -> [UInt8] {
        let counter = Mutex(UInt64(0))
        return {
            let draw = counter.withLock { value -> UInt64 in
                value += 1
                return value
            }
            return [UInt8(truncatingIfNeeded: seed)] + Array(repeating: 0, count: 23)
                + (0..<8).map { UInt8(truncatingIfNeeded: draw >> (56 - 8 * $0)) }
        }
    }

    func index(of identityKey: [UInt8]) -> Int { members.firstIndex { $0.identityKey == identityKey }! }

    mutating func send(_ outgoing: [SecurityCodeAgreement.Outgoing], from node: Int) {
        for message in outgoing {
            let sent = Sent(from: node, to: index(of: message.peer), message: message.message)
            inFlight.append(sent)
            log.append(.sent(sent))
        }
    }

    /// Node `node`'s sessions are now `peers`: it tells its agreement.
    mutating func setView(of node: Int, to peers: Set<Int>) {
        links[node] = peers
        log.append(.view(node: node, peers: peers.sorted()))
        let outgoing = nodes[node].viewChanged(peers: peers.sorted().map { members[$0] })
        if let view = nodes[node].view { viewMembers[view.hash] = peers.union([node]) }
        send(outgoing, from: node)
    }

    /// Sessions between every two of `group`, each side told at once.
    mutating func connectAll(_ group: [Int]) {
        for node in group { setView(of: node, to: links[node].union(group.filter { $0 != node })) }
    }

    mutating func deliver(_ sent: Sent) {
        // A message only travels over a session that both sides still have.
        guard links[sent.from].contains(sent.to), links[sent.to].contains(sent.from) else { return }
        log.append(.delivered(sent))
        send(nodes[sent.to].received(sent.message, from: members[sent.from].identityKey), from: sent.to)
    }

    /// Delivers until nothing is in flight or `limit` messages were taken off the path.
    mutating func run(
        limit: Int = 100_000, using generator: inout some RandomNumberGenerator, shuffle: Bool = false,
        drop: Double = 0
    ) {
        log.append(.run)
        var taken = 0
        while !inFlight.isEmpty, taken < limit {
            let position = shuffle ? Int.random(in: 0..<inFlight.count, using: &generator) : 0
            let sent = inFlight.remove(at: position)
            taken += 1
            if drop > 0, Double.random(in: 0..<1, using: &generator) < drop { continue }
            deliver(sent)
        }
    }

    mutating func run() {
        var generator = SeededGenerator(seed: 0)
        run(using: &generator)
    }

    /// What every node repeats with its REPORTs, put on the path.
    mutating func repeatAll() {
        for node in nodes.indices {
            for peer in links[node].sorted() {
                if let message = nodes[node].repeated(to: members[peer].identityKey) {
                    let sent = Sent(from: node, to: peer, message: message)
                    inFlight.append(sent)
                    log.append(.sent(sent))
                }
            }
        }
    }

    var codes: [SecurityCode?] { nodes.map(\.code) }
    var messagesSent: Int { log.count { if case .sent = $0 { true } else { false } } }

    /// The rule that makes the code worth reading aloud: whenever a node sent REVEAL for a view
    /// and round, it had already been sent — by every other member of that view — a COMMIT or
    /// REVEAL for that view and round. Returns the violations.
    var revealsBeforeCommitments: [String] {
        var heard: [Int: Set<[UInt8]>] = [:]  // node → (sender, view, round) keys it received
        var violations: [String] = []
        func key(_ sender: Int, _ message: SecurityCodeMessage) -> [UInt8] {
            [UInt8(sender)] + message.viewHash + (0..<8).map { UInt8(truncatingIfNeeded: message.round >> (8 * $0)) }
        }
        for event in log {
            switch event {
            case .delivered(let sent):
                heard[sent.to, default: []].insert(key(sent.from, sent.message))
            case .view, .run:
                continue
            case .sent(let sent):
                guard case .reveal = sent.message, let members = viewMembers[sent.message.viewHash] else { continue }
                for member in members
                where member != sent.from && !(heard[sent.from]?.contains(key(member, sent.message)) ?? false) {
                    violations.append("node \(sent.from) revealed round \(sent.message.round) before node \(member)")
                }
            }
        }
        return violations
    }
}

@Suite("Security code agreement (§11.1)")
struct SecurityCodeAgreementTests {
    @Test func twoMembersAgreeInThreeMessagesEach() {
        var meeting = CodeMeeting(2)
        meeting.connectAll([0, 1])
        meeting.run()
        #expect(meeting.codes[0] != nil && meeting.codes[0] == meeting.codes[1])
        #expect(meeting.codes[0]?.digits.count == 12)
        #expect(meeting.messagesSent == 6, "COMMIT, REVEAL, and a complete REVEAL answering the peer's, each way")
        #expect(meeting.revealsBeforeCommitments == [])
        meeting.repeatAll()
        #expect(meeting.inFlight.isEmpty, "nothing to repeat once agreed")
    }

    @Test func aMemberAloneHasACodeWithoutMessages() {
        var meeting = CodeMeeting(1)
        meeting.setView(of: 0, to: [])
        #expect(meeting.codes[0] != nil && meeting.messagesSent == 0)
    }

    /// Eight members whose sessions come up pair by pair in random order (each side noticing at
    /// its own time), messages delivered in random order: all end in one round with one code, and
    /// nobody ever revealed before holding every commitment.
    @Test(arguments: 1...20)
    func staggeredJoinsConverge(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var meeting = CodeMeeting(8)
        var pairs = (0..<8).flatMap { a in ((a + 1)..<8).map { (a, $0) } }
        pairs.shuffle(using: &generator)
        for (a, b) in pairs {
            meeting.setView(of: a, to: meeting.links[a].union([b]))
            meeting.run(limit: Int.random(in: 0...20, using: &generator), using: &generator, shuffle: true)
            meeting.setView(of: b, to: meeting.links[b].union([a]))
            meeting.run(limit: Int.random(in: 0...20, using: &generator), using: &generator, shuffle: true)
        }
        meeting.run(using: &generator, shuffle: true)
        // Messages sent before the receiver's side of the session was up were lost: the repeats
        // that go with REPORTs (about once a second) make up for them.
        var reports = 0
        while meeting.codes.contains(nil) || Set(meeting.codes).count != 1, reports < 20 {
            meeting.repeatAll()
            meeting.run(using: &generator, shuffle: true)
            reports += 1
        }
        #expect(meeting.codes[0] != nil && Set(meeting.codes).count == 1, "\(meeting.codes) after \(reports) repeats")
        #expect(Set(meeting.nodes.map(\.round)).count == 1)
        #expect(meeting.revealsBeforeCommitments == [])
    }

    /// Half of all messages lost: the repeats that go with REPORTs make up for it.
    @Test(arguments: 1...10)
    func lossIsRepairedByRepeats(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var meeting = CodeMeeting(4)
        meeting.connectAll([0, 1, 2, 3])
        meeting.run(using: &generator, shuffle: true, drop: 0.5)
        var reports = 0
        while meeting.codes.contains(nil) || Set(meeting.codes).count != 1, reports < 100 {
            meeting.repeatAll()
            meeting.run(using: &generator, shuffle: true, drop: 0.5)
            reports += 1
        }
        #expect(meeting.codes[0] != nil && Set(meeting.codes).count == 1, "after \(reports) repeats")
        #expect(meeting.revealsBeforeCommitments == [])
    }

    /// A member who leaves and comes back brings a new round with new nonces: the old code never
    /// returns for the same membership, so it cannot be replayed into a later view.
    @Test func leavingAndRejoiningGivesANewCode() {
        var meeting = CodeMeeting(3)
        meeting.connectAll([0, 1, 2])
        meeting.run()
        let first = meeting.codes[0]
        #expect(first != nil && Set(meeting.codes).count == 1)
        meeting.setView(of: 0, to: [1])
        meeting.setView(of: 1, to: [0])
        meeting.setView(of: 2, to: [])
        meeting.run()
        #expect(meeting.codes[0] != nil && meeting.codes[0] == meeting.codes[1] && meeting.codes[0] != first)
        meeting.connectAll([0, 1, 2])
        meeting.run()
        #expect(meeting.codes[0] != nil && Set(meeting.codes).count == 1 && meeting.codes[0] != first)
        #expect(meeting.revealsBeforeCommitments == [])
    }

    /// Names are part of the view: when two members see a third under different names (it sent
    /// them different HELLOs, or one has not seen a rename yet) no code settles for either.
    @Test func membersWhoSeeDifferentNamesGetNoCode() {
        var meeting = CodeMeeting(3)
        meeting.connectAll([0, 1, 2])
        let renamed = CodeMember(identityKey: meeting.members[2].identityKey, name: "mallory")
        meeting.send(meeting.nodes[1].viewChanged(peers: [meeting.members[0], renamed]), from: 1)
        meeting.run()
        #expect(meeting.codes == [nil, nil, nil])
        meeting.repeatAll()
        meeting.run()
        #expect(meeting.codes == [nil, nil, nil])
    }

    /// Someone in the middle, towards A, must commit before A reveals anything; its first nonce
    /// is then fixed for the round (a second one is ignored), and moving to another round costs
    /// it a fresh nonce of A's, revealed only after its new commitment.
    @Test func someoneInTheMiddleMustCommitFirstAndOnce() {
        var meeting = CodeMeeting(2)  // 0 = A, 1 = M (what A sees of the attacker)
        meeting.links = [[1], [0]]
        meeting.setView(of: 0, to: [1])
        for _ in 0..<3 { meeting.repeatAll() }
        #expect(
            meeting.inFlight.count == 4
                && meeting.inFlight.allSatisfy { if case .commit = $0.message { true } else { false } })
        meeting.inFlight.removeAll()  // M never answers: A never reveals
        let view = meeting.nodes[0].view!
        let round = meeting.nodes[0].round
        let m = SecurityCodeMessage.reveal(
            .init(viewHash: view.hash, round: round, nonce: Array(repeating: 9, count: 32), complete: false))
        meeting.deliver(.init(from: 1, to: 0, message: m))  // M's REVEAL fixes its nonce: A reveals and shows a code
        let code = meeting.nodes[0].code
        #expect(code != nil)
        let other = SecurityCodeMessage.reveal(
            .init(viewHash: view.hash, round: round, nonce: Array(repeating: 8, count: 32), complete: false))
        meeting.deliver(.init(from: 1, to: 0, message: other))
        #expect(meeting.nodes[0].code == code, "a second nonce in the same round is ignored")
        // M asks for a new round: A draws a new nonce and reveals it only because M's new
        // commitment is already in hand.
        let commitment = view.commitment(
            of: Array(repeating: 7, count: 32), by: meeting.members[1].identityKey, round: round + 1)
        meeting.inFlight.removeAll()
        meeting.deliver(
            .init(
                from: 1, to: 0, message: .commit(.init(viewHash: view.hash, round: round + 1, commitment: commitment))))
        #expect(meeting.nodes[0].round == round + 1 && meeting.nodes[0].code == nil)
        let reveal = meeting.inFlight.first?.message
        guard case .reveal(let body)? = reveal else {
            Issue.record("A should reveal its new nonce: \(String(describing: reveal))")
            return
        }
        #expect(body.round == round + 1)
        meeting.deliver(
            .init(
                from: 1, to: 0,
                message: .reveal(
                    .init(viewHash: view.hash, round: round + 1, nonce: Array(repeating: 7, count: 32), complete: true))
            ))
        #expect(meeting.nodes[0].code != nil && meeting.nodes[0].code != code)
        #expect(meeting.revealsBeforeCommitments == [])
    }

    /// A REVEAL that does not open the sender's commitment is ignored, and so is a second,
    /// different commitment in the same round: the code waits for the genuine nonce.
    @Test func aRevealThatDoesNotOpenTheCommitmentIsIgnored() {
        var meeting = CodeMeeting(2)
        meeting.connectAll([0, 1])
        let commit = meeting.inFlight.first { $0.from == 1 }!
        meeting.inFlight.removeAll()
        meeting.deliver(commit)  // node 0 holds node 1's commitment and reveals
        meeting.inFlight.removeAll()  // …but its REVEAL is lost
        let view = meeting.nodes[0].view!
        let round = meeting.nodes[0].round
        let bogus = SecurityCodeMessage.reveal(
            .init(viewHash: view.hash, round: round, nonce: Array(repeating: 1, count: 32), complete: false))
        meeting.deliver(.init(from: 1, to: 0, message: bogus))
        #expect(meeting.nodes[0].state == .settling(waitingFor: [meeting.members[1].identityKey]))
        guard case .commit(var second) = commit.message else { return }
        second.commitment[0] ^= 1
        meeting.deliver(.init(from: 1, to: 0, message: .commit(second)))
        #expect(meeting.nodes[0].state == .settling(waitingFor: [meeting.members[1].identityKey]))
        meeting.inFlight.removeAll()
        meeting.repeatAll()  // node 0's REVEAL again; node 1 answers with its own
        meeting.run()
        #expect(meeting.codes[0] != nil && meeting.codes[0] == meeting.codes[1])
    }

    /// A member that shows one nonce to some members and another to others (running two
    /// agreements behind one identity) makes their codes differ.
    @Test func twoFacedNoncesShowAsDifferentCodes() {
        var meeting = CodeMeeting(3)
        // Node 2 is two-faced: twin t hears everything sent to node 2 but speaks to node t only.
        var twins = (0..<2).map {
            SecurityCodeAgreement(roomID: meeting.roomID, me: meeting.members[2], nonces: CodeMeeting.nonces(100 + $0))
        }
        meeting.links = [[1, 2], [0, 2], [0, 1]]
        meeting.setView(of: 0, to: [1, 2])
        meeting.setView(of: 1, to: [0, 2])
        func speak(_ t: Int, _ outgoing: [SecurityCodeAgreement.Outgoing]) -> [CodeMeeting.Sent] {
            outgoing.filter { meeting.index(of: $0.peer) == t }.map { .init(from: 2, to: t, message: $0.message) }
        }
        for t in 0..<2 {
            meeting.inFlight += speak(t, twins[t].viewChanged(peers: [meeting.members[0], meeting.members[1]]))
        }
        var steps = 0
        while !meeting.inFlight.isEmpty, steps < 1000 {
            steps += 1
            let sent = meeting.inFlight.removeFirst()
            guard sent.to == 2 else {
                meeting.deliver(sent)
                continue
            }
            for t in 0..<2 {
                meeting.inFlight += speak(
                    t, twins[t].received(sent.message, from: meeting.members[sent.from].identityKey))
            }
        }
        #expect(meeting.codes[0] != nil && meeting.codes[1] != nil)
        #expect(meeting.codes[0] != meeting.codes[1])
    }

    /// Rounds follow the highest seen for the view, but not a jump of more than 2^32; a lower
    /// round is answered with ours.
    @Test func roundsFollowTheHighestButNotABigJump() {
        var meeting = CodeMeeting(2)
        meeting.connectAll([0, 1])
        meeting.run()
        let round = meeting.nodes[0].round
        let view = meeting.nodes[0].view!
        let peer = meeting.members[1].identityKey
        func commit(_ round: UInt64) -> SecurityCodeMessage {
            .commit(.init(viewHash: view.hash, round: round, commitment: Array(repeating: 0, count: 32)))
        }
        #expect(meeting.nodes[0].received(commit(round + SecurityCodeAgreement.maximumRoundStep + 1), from: peer) == [])
        #expect(meeting.nodes[0].round == round && meeting.nodes[0].code != nil)
        let followed = meeting.nodes[0].received(commit(round + SecurityCodeAgreement.maximumRoundStep), from: peer)
        #expect(meeting.nodes[0].round == round + SecurityCodeAgreement.maximumRoundStep)
        #expect(followed.count == 1 && followed[0].message.round == meeting.nodes[0].round)
        let answer = meeting.nodes[0].received(commit(1), from: peer)
        #expect(answer.map(\.message.round) == [meeting.nodes[0].round])
    }

    @Test func viewsThatCannotHaveACodeSayWhy() {
        var meeting = CodeMeeting(2)
        let impostor = CodeMember(identityKey: meeting.members[0].identityKey, name: "me again")
        #expect(meeting.nodes[0].viewChanged(peers: [impostor]) == [])
        #expect(meeting.nodes[0].state == .unavailable("one identity key appears twice (01eeeeee)"))
        let long = CodeMember(identityKey: meeting.members[1].identityKey, name: String(repeating: "x", count: 256))
        _ = meeting.nodes[0].viewChanged(peers: [long])
        #expect(meeting.nodes[0].state == .unavailable("a member's name is empty or longer than 255 bytes"))
        meeting.connectAll([0, 1])
        meeting.run()
        #expect(meeting.codes[0] != nil && meeting.codes[0] == meeting.codes[1])
    }
}
