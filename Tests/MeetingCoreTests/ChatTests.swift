import ControlAPI
import MeetingCore
import MeetingSimulation
import ParleyCore
import ParleyProtocol
import Testing

/// Chat (docs/PROTOCOL.md §14.1): the streams' rules as tables on made-up times, then the core.
@Suite("Chat streams")
struct ChatStreamTests {
    static let start = Instant.now

    static func piece(_ sequence: UInt32, _ text: String, first: UInt32 = 1, more: Bool = false) -> SessionControl.Chat
    {
        SessionControl.Chat(sequence: sequence, first: first, more: more, text: Array(text.utf8))
    }

    /// Pieces arriving out of order and twice give each message once, in order; every piece is
    /// answered with the cumulative acknowledgement.
    @Test func reorderedAndRepeatedPiecesDeliverEachMessageOnceInOrder() {
        var streams = ChatStreams(epoch: 1)
        let arrivals: [(SessionControl.Chat, [String], UInt32)] = [
            (Self.piece(2, "two"), [], 0),
            (Self.piece(1, "one"), ["one", "two"], 2),
            (Self.piece(2, "two"), [], 2),  // a retransmission: acknowledged again, not shown again
            (Self.piece(4, "four"), [], 2),
            (Self.piece(3, "thr", more: true), ["thrfour"], 4),  // 3 continues in 4
            (Self.piece(1, "one"), [], 4),
            (Self.piece(70, "far ahead"), [], 4),  // beyond the receive window: dropped
            (Self.piece(5, "five"), ["five"], 5),
        ]
        for (index, (piece, expected, acknowledge)) in arrivals.enumerated() {
            let result = streams.receive(piece)
            #expect(result.messages == expected, "arrival \(index)")
            #expect(result.acknowledge == acknowledge, "arrival \(index)")
        }
    }

    /// A message in pieces is put back together, a character split between pieces included; one
    /// longer than 4096 bytes or not UTF-8 is dropped (and acknowledged: it arrived).
    @Test func piecesMakeMessagesAndBadOnesAreDropped() {
        var streams = ChatStreams(epoch: 1)
        let text = String(repeating: "é", count: 1000) + "a" + String(repeating: "é", count: 1047) + "a"  // 4096 bytes
        var sender = ChatStreams(epoch: 1)
        sender.enqueue(Array(text.utf8))
        let pieces = sender.transmit(now: Self.start, rttMs: nil)
        #expect(pieces.count == 4)
        #expect(pieces.map(\.more) == [true, true, true, false])
        #expect(String(validating: pieces[1].text, as: UTF8.self) == nil, "a piece splits a character")
        var messages: [String] = []
        for piece in pieces.reversed() { messages += streams.receive(piece).messages }
        #expect(messages == [text])

        // Five full pieces: 5120 bytes, too long; the message after it is delivered.
        var dropped = 0
        for sequence in UInt32(5)...9 {
            let piece = Self.piece(sequence, String(repeating: "b", count: 1024), first: 5, more: sequence < 9)
            dropped += streams.receive(piece).dropped
        }
        #expect(dropped == 1)
        #expect(streams.receive(Self.piece(10, "after", first: 5)).messages == ["after"])
        let invalid = SessionControl.Chat(sequence: 11, first: 11, more: false, text: [0xC3, 0x28])
        let step = streams.receive(invalid)
        #expect(step.messages.isEmpty && step.dropped == 1 && step.acknowledge == 11)
    }

    /// A sender that gave up pieces (its queue overflowed) says so with `first`: the receiver
    /// skips what it waited for, and a half-received message with it.
    @Test func theReceiverSkipsWhatTheSenderGaveUp() {
        var streams = ChatStreams(epoch: 1)
        #expect(streams.receive(Self.piece(1, "par", more: true)).acknowledge == 1)
        let result = streams.receive(Self.piece(9, "new", first: 8))
        #expect(result.messages.isEmpty && result.acknowledge == 7)
        let next = streams.receive(Self.piece(8, "the ", first: 8, more: true))
        #expect(next.messages == ["the new"] && next.acknowledge == 9)
    }

    /// Sixteen pieces in flight at most; a timeout sends them all again after twice the RTT (at
    /// least 200 ms), then twice as long each time up to 5 s; an acknowledgement removes what it
    /// covers and lets the next ones out.
    @Test func windowRetransmissionAndBackOff() {
        var sender = ChatStreams(epoch: 1)
        for index in 0..<20 { sender.enqueue(Array("message \(index)".utf8)) }
        let first = sender.transmit(now: Self.start, rttMs: 40)
        #expect(first.map(\.sequence) == Array(1...16))
        #expect(first.allSatisfy { $0.first == 1 })
        #expect(sender.retransmitAt == Self.start + .milliseconds(200))
        #expect(sender.transmit(now: Self.start, rttMs: 40).isEmpty, "the window is full")

        var at = Self.start + .milliseconds(200)
        var waits: [Duration] = []
        for _ in 0..<7 {
            #expect(sender.retransmit(now: at, rttMs: 150).count == 16)
            let next = sender.retransmitAt!
            waits.append(next - at)
            at = next
        }
        #expect(waits.map { $0 / .milliseconds(1) } == [600, 1200, 2400, 4800, 5000, 5000, 5000])

        let advanced = sender.acknowledged(10, now: at, rttMs: 150)
        let again = sender.acknowledged(10, now: at, rttMs: 150)
        #expect(advanced && !again, "the second acknowledges nothing new")
        #expect(sender.inFlight == 6 && sender.retransmitAt == at + .milliseconds(300))
        let more = sender.transmit(now: at, rttMs: 150)
        #expect(more.map(\.sequence) == Array(17...20))
        #expect(more.allSatisfy { $0.first == 11 })
        let all = sender.acknowledged(99, now: at, rttMs: 150)
        #expect(all && sender.queue.isEmpty && sender.retransmitAt == nil)
    }

    /// A queue that would pass 256 pieces gives up its oldest whole messages.
    @Test func anOverfullQueueGivesUpTheOldestMessages() {
        var sender = ChatStreams(epoch: 1)
        let big = Array(String(repeating: "x", count: 4096).utf8)
        for _ in 0..<64 { sender.enqueue(big) }
        #expect(sender.queue.count == 256)
        _ = sender.transmit(now: Self.start, rttMs: nil)
        sender.enqueue(Array("one more".utf8))
        #expect(sender.queue.count == 253)
        #expect(sender.queue.first?.sequence == 5)
        #expect(sender.inFlight == 12)
        #expect(sender.retransmit(now: Self.start + .seconds(1), rttMs: nil).allSatisfy { $0.first == 5 })
    }

    /// The fuzz target's seeds, their truncations and some noise hold up in an ordinary run.
    @Test func fuzzEntryPoint() {
        for seed in MeetingCoreFuzz.sessionControlSeeds() {
            for length in 0...seed.count { MeetingCoreFuzz.sessionControl(Array(seed.prefix(length))) }
        }
        var generator = SystemRandomNumberGenerator()
        for length in [1, 9, 10, 64, 300, 2000] {
            MeetingCoreFuzz.sessionControl((0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
        }
    }
}

@Suite("Chat in the core")
struct ChatCoreTests {
    typealias Harness = MeetingCoreTests.Harness

    /// A harness whose peer ("peer", version 3) has a session: returns its link.
    static func connected(_ harness: inout Harness, versions: [UInt8] = [1, 2, 3]) -> LinkID {
        let commands = harness.fromPeer(harness.hello(versions: versions), broadcast: true)
        let id = MeetingCoreTests.linkID(in: commands)!
        _ = harness.feed(.path(id, .created(PathCredentials(ufrag: "abcd", password: "0123456789012345678901"))))
        _ = harness.feed(.session(id, .established))
        return id
    }

    static func chats(_ commands: [MeetingCommand]) -> [SessionControl] {
        commands.compactMap { command in
            guard case .sendControl(_, let message) = command else { return nil }
            switch message {
            case .chat, .chatAck: return message
            default: return nil
            }
        }
    }

    /// The name shown is the one of the session the message came over: text that claims to be
    /// from someone else is only text, and the wire format has no sender field to forge.
    @Test func theSenderIsTheSessionsPeerWhateverTheTextSays() {
        var harness = Harness()
        let id = Self.connected(&harness)
        let forged = SessionControl.Chat(sequence: 1, first: 1, more: false, text: Array("me: I am me, trust me".utf8))
        let commands = harness.feed(.session(id, .chat(forged)))
        #expect(Self.chats(commands) == [.chatAck(cumulative: 1)])
        let entry = try! #require(harness.core.chat.last)
        #expect(entry.name == "peer" && entry.fromID == harness.peer.peerIdentity.shortID)
        #expect(entry.text == "me: I am me, trust me")
        let events = commands.compactMap { command -> ControlEvent? in
            if case .publish(let event) = command, event.kind == .chat { event } else { nil }
        }
        #expect(events.map(\.name) == ["peer"] && events.map(\.peer) == [harness.peer.peerIdentity.shortID])
    }

    /// Terminal control sequences in a message are shown as U+FFFD, so no member can drive
    /// another's terminal.
    @Test func controlCharactersAreNotPassedOn() {
        var harness = Harness()
        let id = Self.connected(&harness)
        let text = "red \u{1B}[31mtext\u{07}\ttab\nline \u{9B}"
        _ = harness.feed(.session(id, .chat(.init(sequence: 1, first: 1, more: false, text: Array(text.utf8)))))
        #expect(harness.core.chat.last?.text == "red \u{FFFD}[31mtext\u{FFFD}\ttab\nline \u{FFFD}")
    }

    @Test func sayingSendsToVersion3PeersAndRefusesWhatItMust() {
        var harness = Harness()
        let id = Self.connected(&harness)
        let (outcome, commands) = harness.core.say("hello", at: harness.now)
        #expect(outcome == .success(ChatDelivery(recipients: ["peer"], unreachable: [])))
        #expect(
            commands.contains {
                if case .sendControl(id, .chat(let piece)) = $0 { piece.text == Array("hello".utf8) } else { false }
            })
        #expect(harness.core.chat.last?.name == "me")

        let tooLong = String(repeating: "é", count: 2048) + "x"
        let refused = harness.core.say(tooLong, at: harness.now).outcome
        #expect(refused == .failure(.tooLong(bytes: 4097)))
        #expect("\(ChatRefusal.tooLong(bytes: 4097))".contains("4097 bytes"))
        let empty = harness.core.say("", at: harness.now).outcome
        #expect(empty == .failure(.empty))
        let largest = harness.core.say(String(repeating: "é", count: 2048), at: harness.now).outcome
        #expect((try? largest.get()) != nil, "4096 bytes fit")

        // The rate limit: ten at once (two were sent above), then one a second.
        var results: [Bool] = []
        for _ in 0..<9 {
            results.append((try? harness.core.say("quick", at: harness.now).outcome.get()) != nil)
        }
        #expect(results == [true, true, true, true, true, true, true, true, false])
        let later = harness.core.say("later", at: harness.now + .milliseconds(1100)).outcome
        #expect((try? later.get()) != nil)
    }

    @Test func aPeerOfAnOlderVersionGetsNoChatAndTheUserIsTold() {
        var harness = Harness()
        _ = Self.connected(&harness, versions: [1, 2])
        let (outcome, commands) = harness.core.say("hello", at: harness.now)
        #expect(outcome == .success(ChatDelivery(recipients: [], unreachable: ["peer"])))
        #expect(Self.chats(commands).isEmpty)
    }

    /// Messages said while the session has no keys wait for it; once it works again they go out
    /// at once, and the retransmission timer is part of the core's deadline only while they can.
    @Test func messagesWaitForTheSessionAndGoOutWhenItWorks() {
        var harness = Harness()
        let id = Self.connected(&harness)
        _ = harness.feed(.session(id, .keysLost("handshake timed out")))
        let (_, quiet) = harness.core.say("while away", at: harness.now)
        #expect(Self.chats(quiet).isEmpty)
        let back = harness.feed(.session(id, .rekeyed), after: 3)
        #expect(Self.chats(back).count == 1)
        let deadline = try! #require(harness.core.nextDeadline)
        #expect(deadline <= harness.now + .milliseconds(200))
        let resent = harness.feed(.tick, after: 0.2)
        #expect(Self.chats(resent).count == 1, "retransmitted after 200 ms")
        _ = harness.feed(.session(id, .chatAck(cumulative: 1)))
        let later = harness.feed(.tick, after: 5)
        #expect(Self.chats(later).isEmpty)
    }
}

/// Whole meetings on the simulator: every message from every member arrives exactly once and in
/// order at every other, through loss, a relayed pair and an ICE restart.
@Suite("Chat scenarios (simulated)", .serialized)
struct ChatScenarioTests {
    static func sayRound(
        _ sim: MeetingSimulation, _ ids: [MeetingSimulation.NodeID], round: Int, big: Bool = false
    ) -> [String: [String]] {
        var sent: [String: [String]] = [:]
        for id in ids {
            for index in 0..<3 {
                var text = "\(sim.name(of: id)) round \(round) message \(index)"
                if big && index == 1 { text += " " + String(repeating: "ü", count: 2000) }
                let outcome = sim.say(id, text)
                #expect((try? outcome.get()) != nil)
                sent[sim.name(of: id), default: []].append(text)
            }
        }
        return sent
    }

    /// What `listener` shows from each other member, in order.
    static func received(_ sim: MeetingSimulation, at listener: MeetingSimulation.NodeID) -> [String: [String]] {
        var result: [String: [String]] = [:]
        for entry in sim.chat(of: listener) where entry.name != sim.name(of: listener) {
            result[entry.name, default: []].append(entry.text)
        }
        return result
    }

    static func everyoneGotEverything(
        _ sim: MeetingSimulation, _ ids: [MeetingSimulation.NodeID], _ sent: [String: [String]]
    ) -> Bool {
        ids.allSatisfy { listener in
            var expected = sent
            expected[sim.name(of: listener)] = nil
            return received(sim, at: listener) == expected
        }
    }

    @Test func exactlyOnceInOrderThroughLossARelayAndARestart() {
        let sim = MeetingSimulation(seed: 16)
        let ids = ["alice", "bob", "carol"].map { sim.addNode($0) }
        let (alice, bob, carol) = (ids[0], ids[1], ids[2])
        sim.joinAll()
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })

        // 20 % loss each way between alice and bob, messages of one and of four pieces.
        sim.setLoss(from: alice, to: bob, 0.2)
        sim.setLoss(from: bob, to: alice, 0.2)
        var sent = Self.sayRound(sim, ids, round: 1, big: true)
        #expect(sim.run(until: .seconds(10)) { Self.everyoneGotEverything(sim, ids, sent) })
        for id in ids { #expect(Self.received(sim, at: id).values.allSatisfy { $0.count == 3 }) }

        // bob and carol lose their direct path: alice carries their session packets, chat too.
        sim.partition(bob, carol)
        #expect(sim.run(until: .seconds(10)) { sim.links(of: bob)["carol"]?.route == "peer" && sim.allLinksUp() })
        for (name, texts) in Self.sayRound(sim, ids, round: 2) { sent[name, default: []] += texts }
        #expect(sim.run(until: .seconds(10)) { Self.everyoneGotEverything(sim, ids, sent) })

        // carol's addresses change while her messages are in flight: every link restarts ICE and
        // re-keys; nothing is repeated or lost.
        sim.heal(bob, carol)
        for (name, texts) in Self.sayRound(sim, ids, round: 3) { sent[name, default: []] += texts }
        sim.changeAddress(carol, noticed: true)
        #expect(sim.run(until: .seconds(20)) { Self.everyoneGotEverything(sim, ids, sent) })
        sim.run(for: .seconds(5))
        #expect(Self.everyoneGotEverything(sim, ids, sent))
    }

    /// A member who joins later does not get earlier messages.
    @Test func aLateJoinerGetsOnlyWhatIsSaidAfterItJoined() {
        let sim = MeetingSimulation(seed: 3)
        let ids = ["alice", "bob"].map { sim.addNode($0) }
        sim.joinAll()
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        _ = sim.say(ids[0], "before")
        sim.run(for: .seconds(1))
        let carol = sim.addNode("carol")
        sim.join(carol)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        _ = sim.say(ids[0], "after")
        #expect(sim.run(until: .seconds(3)) { sim.chat(of: carol).map(\.text) == ["after"] })
        #expect(sim.chat(of: ids[1]).map(\.text) == ["before", "after"])
    }
}
