import ControlAPI
import MeetingCore
import ParleyCore
import ParleyProtocol
import RendezvousWire
import Sodium
import Testing

/// The core on its own: inputs in, commands out, on a made-up clock.
@Suite("Meeting core")
struct MeetingCoreTests {
    static let start = Instant.now
    static let keys = try! RoomKeys(roomSecret: SecureBytes(copying: [UInt8](repeating: 7, count: 32)))

    static func identity(_ byte: UInt8) -> NodeIdentity {
        try! NodeIdentity(
            identitySeed: SecureBytes(copying: [UInt8](repeating: byte, count: 32)),
            staticSecret: SecureBytes(copying: [UInt8](repeating: byte &+ 100, count: 32)))
    }

    /// A core that is admitted with its ICE agent ready, and a peer that can send it envelopes.
    struct Harness {
        var core: MeetingCore
        let me = MeetingCoreTests.identity(1)
        /// The peer that `fromPeer` speaks as (a test may switch to another).
        var peer = MeetingCoreTests.identity(2)
        var member = RendezvousMemberID(42)
        var peerSequence: UInt64 = 1_000
        var now = MeetingCoreTests.start

        init(paused: Bool = false, pins: IdentityPins = IdentityPins()) {
            let configuration = try! MeetingConfiguration(
                identity: me, keys: MeetingCoreTests.keys, displayName: "me", sessionEpoch: 1,
                firstEnvelopeSequence: 1, randomSeed: 1)
            core = MeetingCore(configuration: configuration, pins: pins, muted: false, now: now)
            _ = feed(.start)
            _ = feed(
                .rendezvousJoined(RendezvousWelcome(memberID: RendezvousMemberID(1), members: []), reconnected: false))
            _ = feed(.iceAgentReady)
            if paused { _ = feed(.audio(.paused(true, noMediaSentOn: []))) }
        }

        mutating func feed(_ input: MeetingInput, after seconds: Double = 0) -> [MeetingCommand] {
            now = now + .milliseconds(Int(seconds * 1000))
            return core.handle(input, at: now)
        }

        /// An envelope from the peer, delivered by the rendezvous.
        mutating func fromPeer(
            _ message: SignalingMessage, broadcast: Bool = false, after seconds: Double = 0
        )
            -> [MeetingCommand]
        {
            peerSequence += 1
            let envelope = try! Envelope.seal(
                message, to: broadcast ? .everyone : .peer(me.peerIdentity), from: peer, sequence: peerSequence,
                keys: MeetingCoreTests.keys)
            return feed(.rendezvousDelivered(from: member, payload: envelope), after: seconds)
        }

        func hello(epoch: UInt64 = 9, versions: [UInt8] = [1], name: String = "peer") -> SignalingMessage {
            .hello(
                try! Hello(
                    identity: peer.peerIdentity, sessionEpoch: epoch, protocolVersions: versions, displayName: name))
        }

        /// Opens what the core sent the peer.
        func opened(_ commands: [MeetingCommand]) -> [SignalingMessage] {
            var guardWindow = EnvelopeReplayGuard()
            return commands.compactMap { command in
                guard case .sendEnvelope(let bytes, _) = command else { return nil }
                return try? Envelope.open(bytes, as: peer, keys: MeetingCoreTests.keys, replayGuard: &guardWindow)
                    .message
            }
        }
    }

    static func kinds(_ commands: [MeetingCommand]) -> [String] {
        commands.compactMap { command in
            switch command {
            case .sendEnvelope: "envelope"
            case .createPath: "createPath"
            case .setRemoteCredentials: "setRemoteCredentials"
            case .addRemoteCandidate: "addRemoteCandidate"
            case .remoteCandidatesDone: "remoteCandidatesDone"
            case .restartPath: "restartPath"
            case .removePath: "removePath"
            case .startSession(_, let rehandshake): rehandshake ? "rekey" : "startSession"
            case .sendReport(_, let closes, _, _): closes ? "report" : "extraReport"
            case .sendControl(_, .leave): "leave"
            case .end: "end"
            default: nil
            }
        }
    }

    static func linkID(in commands: [MeetingCommand]) -> LinkID? {
        for command in commands { if case .createPath(let id, _, _, _, _) = command { return id } }
        return nil
    }

    // MARK: HELLO (§6.6 steps 2–3, 6)

    @Test(arguments: [
        // (broadcast, versions, expected commands, answered with a HELLO)
        (true, [UInt8(1)], ["envelope", "createPath"], true),
        (false, [1], ["createPath"], false),
        (true, [9], ["envelope"], true),  // no version in common: answered, but no link
    ])
    func aHelloFromSomeoneNew(broadcast: Bool, versions: [UInt8], expected: [String], answered: Bool) {
        var harness = Harness()
        let commands = harness.fromPeer(harness.hello(versions: versions), broadcast: broadcast)
        #expect(Self.kinds(commands) == expected)
        let sent = harness.opened(commands)
        #expect(sent.contains { if case .hello = $0 { true } else { false } } == answered)
    }

    @Test func aHelloWithTheSameEpochOnlyReaddressesAndANewEpochReplacesTheLink() {
        var harness = Harness()
        let first = harness.fromPeer(harness.hello(epoch: 9))
        let link = try! #require(Self.linkID(in: first))
        #expect(Self.kinds(harness.fromPeer(harness.hello(epoch: 9))).isEmpty)
        let restarted = harness.fromPeer(harness.hello(epoch: 10))
        #expect(Self.kinds(restarted) == ["removePath", "createPath"])
        #expect(restarted.contains { if case .removePath(let id) = $0 { id == link } else { false } })
    }

    // MARK: ICE signaling (§6.6 steps 4–5)

    @Test func signalingThatArrivesBeforeTheStreamExistsIsHeldForIt() {
        var harness = Harness()
        let id = try! #require(Self.linkID(in: harness.fromPeer(harness.hello())))
        let credentials = try! ParleyProtocol.ICECredentials(
            generation: 0, usernameFragment: "abcd", password: "0123456789012345678901")
        #expect(Self.kinds(harness.fromPeer(.iceCredentials(credentials))).isEmpty)
        #expect(
            Self.kinds(
                harness.fromPeer(.iceCandidate(generation: 0, candidate: "candidate:1 1 UDP 1 10.0.0.1 1 typ host"))
            ).isEmpty)
        let created = harness.feed(
            .path(id, .created(PathCredentials(ufrag: "mine", password: "mypassword0123456789ab"))))
        #expect(Self.kinds(created) == ["envelope", "setRemoteCredentials", "addRemoteCandidate"])
    }

    @Test(arguments: [
        // (message, generation it carries, commands when the link is at generation 0)
        ("credentials", UInt32(0), ["setRemoteCredentials"]),
        ("credentials", 1, ["restartPath", "setRemoteCredentials"]),
        ("restart", 0, []),
        ("restart", 3, ["restartPath"]),
        ("candidate", 0, ["addRemoteCandidate"]),
        ("candidate", 1, []),
        ("done", 0, ["remoteCandidatesDone"]),
        ("done", 2, []),
    ])
    func generationRules(message: String, generation: UInt32, expected: [String]) {
        var harness = Harness()
        let id = try! #require(Self.linkID(in: harness.fromPeer(harness.hello())))
        _ = harness.feed(.path(id, .created(PathCredentials(ufrag: "mine", password: "mypassword0123456789ab"))))
        let signal: SignalingMessage =
            switch message {
            case "credentials":
                .iceCredentials(
                    try! ICECredentials(
                        generation: generation, usernameFragment: "abcd", password: "0123456789012345678901"))
            case "restart": .iceRestart(generation: generation)
            case "candidate":
                .iceCandidate(generation: generation, candidate: "candidate:1 1 UDP 1 10.0.0.1 1 typ host")
            default: .iceCandidatesDone(generation: generation)
            }
        #expect(Self.kinds(harness.fromPeer(signal)) == expected)
    }

    /// Candidates the agent gathered for the old generation, still on their way when the restart
    /// was asked for, are not sent under the new generation.
    @Test func candidatesOfTheOldGenerationAreDroppedAfterARestart() {
        var harness = Harness()
        let id = try! #require(Self.linkID(in: harness.fromPeer(harness.hello())))
        _ = harness.feed(.path(id, .created(PathCredentials(ufrag: "gen0", password: "mypassword0123456789ab"))))
        #expect(Self.kinds(harness.fromPeer(.iceRestart(generation: 1))) == ["restartPath"])
        let restarted = harness.feed(
            .path(id, .restarted(PathCredentials(ufrag: "gen1", password: "newpassword0123456789a"))))
        #expect(harness.opened(restarted).count == 1)  // ICE_CREDENTIALS(1)
        let stale = harness.feed(
            .path(id, .localCandidate(line: "candidate:1 1 UDP 1 10.0.0.1 1 typ host", ufrag: "gen0")))
        #expect(Self.kinds(stale).isEmpty)
        _ = harness.feed(.path(id, .generationBegan))
        let fresh = harness.feed(
            .path(id, .localCandidate(line: "candidate:1 1 UDP 1 10.0.0.2 1 typ host", ufrag: "gen1")))
        guard case .iceCandidate(let generation, _)? = harness.opened(fresh).first else {
            Issue.record("no candidate sent: \(fresh)")
            return
        }
        #expect(generation == 1)
    }

    // MARK: Sessions, REPORTs, timers

    /// Brings a link up: path, session, traffic both ways.
    static func upLink(_ harness: inout Harness, versions: [UInt8] = [1]) -> LinkID {
        let id = sessionLink(&harness, versions: versions)
        _ = harness.feed(
            .session(id, .report(SessionControl.Report(timestampMs: 1, mediaReceived: 5), rttMs: 10, mediaSent: 5)))
        return id
    }

    /// A link with its path and session, and a packet from the peer: all but its REPORT.
    static func sessionLink(_ harness: inout Harness, versions: [UInt8] = [1]) -> LinkID {
        let id = linkID(in: harness.fromPeer(harness.hello(versions: versions)))!
        _ = harness.feed(.path(id, .created(PathCredentials(ufrag: "mine", password: "mypassword0123456789ab"))))
        _ = harness.fromPeer(
            .iceCredentials(
                try! ICECredentials(generation: 0, usernameFragment: "abcd", password: "0123456789012345678901")))
        _ = harness.feed(.path(id, .connected))
        _ = harness.feed(.session(id, .established))
        _ = harness.feed(.session(id, .authenticated(via: nil)))
        return id
    }

    /// The meeting did not wake for 1.5 s (a loaded machine) while both links' packets kept
    /// coming; the driver hands their held facts over one by one: the first must not judge the
    /// second link's silence before the second's own fact is in.
    @Test func heldLivenessIsHandedOverBeforeAnyLinkIsJudged() {
        var harness = Harness()
        let first = Self.upLink(&harness)
        harness.peer = Self.identity(3)
        harness.member = RendezvousMemberID(43)
        let second = Self.upLink(&harness)
        let latest = harness.now + .milliseconds(1400)
        _ = harness.feed(.session(first, .stillAuthenticated(at: latest, spacing: .milliseconds(250))), after: 1.5)
        #expect(harness.core.links.first { $0.id == second }?.state == .up, "judged before its fact was in")
        _ = harness.feed(.session(second, .stillAuthenticated(at: latest, spacing: .milliseconds(250))))
        _ = harness.feed(.tick)
        #expect(harness.core.links.map(\.state) == [.up, .up])
    }

    /// §10.1: a silent participant's link is up once the peer reports at all. A node that joins
    /// starts unpaused; a peer that talks REPORTs once a second; if its first REPORT came before
    /// our DTX pause began, on a link we had sent no media on, the link is up when the pause
    /// begins, not a second later with the peer's next REPORT (a 16th node's join, measured).
    @Test(arguments: [true, false])
    func aReportBeforeOurPauseCountsOnceThePauseBegins(sentNothing: Bool) {
        var harness = Harness()
        let id = Self.sessionLink(&harness)
        _ = harness.feed(
            .session(id, .report(SessionControl.Report(timestampMs: 1, mediaReceived: 0), rttMs: 10, mediaSent: 0)))
        #expect(harness.core.links.first?.state == .handshaking, "we are not paused: our media is on its way")
        _ = harness.feed(.audio(.paused(true, noMediaSentOn: sentNothing ? [id] : [])), after: 0.1)
        // Media we sent before the pause must be reported received first.
        #expect(harness.core.links.first?.state == (sentNothing ? .up : .handshaking))
    }

    /// A node without audio (its device failed, or none could be opened) sends no media for the
    /// rest of the meeting: it is a silent participant (§10.1). Its links come up once the peer
    /// reports at all, and it REPORTs to every link every 250 ms, as in a DTX pause. (Before, it
    /// went on as a talker: its links waited for a peer to report our media, which never came,
    /// and it REPORTed once a second, so a peer that had had its media called the link lost.)
    @Test(arguments: [AudioFact.unavailable("no sound server"), .failed("the microphone was unplugged")])
    func aNodeWithoutAudioIsASilentParticipant(fact: AudioFact) {
        var harness = Harness()
        let id = Self.sessionLink(&harness)
        _ = harness.feed(.audio(fact), after: 0.1)
        _ = harness.feed(
            .session(id, .report(SessionControl.Report(timestampMs: 1, mediaReceived: 0), rttMs: 10, mediaSent: 0)),
            after: 0.1)
        #expect(harness.core.links.first?.state == .up)
        var reports: [Duration] = []
        while harness.now - Self.start < .seconds(2) {
            harness.now = try! #require(harness.core.nextDeadline)
            if Self.kinds(harness.core.handle(.tick, at: harness.now)).contains(where: { $0.hasSuffix("eport") }) {
                reports.append(harness.now - Self.start)
            }
        }
        let gaps = zip(reports.dropFirst(), reports).map { $0 - $1 }
        #expect(reports.count >= 6 && gaps.allSatisfy { $0 == .milliseconds(250) }, "REPORTs at \(reports)")
        // A pause that DTX ends later does not bring the talker's schedule back: no media comes.
        _ = harness.feed(.audio(.paused(false, noMediaSentOn: [])))
        let next = try! #require(harness.core.nextDeadline)
        #expect(next - harness.now <= .milliseconds(250))
    }

    @Test func aLinkComesUpOnceBothWaysWork() {
        var harness = Harness()
        let id = Self.upLink(&harness)
        #expect(harness.core.links.first?.state == .up)
        #expect(harness.core.links.first?.id == id)
        #expect(harness.core.links.first?.rttMs == 10)
    }

    /// REPORTs (§10.1): one at once when the session is established, then every second ± 10 %
    /// (each closes a loss interval); while DTX holds our media back, every 250 ms instead, the
    /// one that closes an interval being the first of these at or after its time.
    @Test(arguments: [false, true])
    func reportsFollowTheirSchedule(paused: Bool) {
        var harness = Harness(paused: paused)
        let id = Self.linkID(in: harness.fromPeer(harness.hello()))!
        _ = harness.feed(.path(id, .created(PathCredentials(ufrag: "mine", password: "mypassword0123456789ab"))))
        // The first one also closes the (empty) first interval and starts the schedule.
        #expect(Self.kinds(harness.feed(.session(id, .established))) == ["report"])
        var times: [Duration] = []
        var closing: [Bool] = []
        while harness.now - Self.start < .seconds(3) {
            let deadline = try! #require(harness.core.nextDeadline)
            harness.now = deadline
            for command in harness.core.handle(.tick, at: deadline) {
                if case .sendReport(let link, let closes, _, _) = command, link == id {
                    times.append(deadline - Self.start)
                    closing.append(closes)
                }
            }
        }
        let closed = zip(times, closing).filter(\.1).map(\.0)
        #expect(closed.count >= 2)
        let latest = Duration.milliseconds(paused ? 1350 : 1100)
        for (a, b) in zip(closed, closed.dropFirst()) {
            #expect(b - a >= .milliseconds(900) && b - a <= latest, "\(closed)")
        }
        if paused {
            for (a, b) in zip(times, times.dropFirst()) { #expect(b - a <= .milliseconds(250), "\(times)") }
        } else {
            #expect(times == closed)
        }
    }

    /// The data path says the peer's media started to queue (§10.1): a REPORT goes at once, so the
    /// peer need not wait up to a second to lower its rate; at most one every 500 ms.
    @Test func aQueueThatStartsIsReportedAtOnce() {
        var harness = Harness()
        let id = Self.upLink(&harness)
        func reports() -> Int {
            Self.kinds(harness.feed(.session(id, .queueRising))).filter { $0.hasSuffix("eport") }.count
        }
        harness.now += .milliseconds(100)
        #expect(reports() == 1)
        harness.now += .milliseconds(300)
        #expect(reports() == 0)
        harness.now += .milliseconds(250)
        #expect(reports() == 1)
    }

    @Test func leavingSaysGoodbyeOverEverySessionAndTheRendezvous() {
        var harness = Harness()
        _ = Self.upLink(&harness)
        let commands = harness.feed(.leave)
        #expect(Self.kinds(commands) == ["leave", "envelope", "removePath", "end"])
        #expect(harness.opened(commands).contains(.bye))
        #expect(harness.core.nextDeadline == nil)
        #expect(harness.feed(.tick).isEmpty)
    }

    @Test func aRefusalBeforeAdmissionEndsTheMeetingWithWhy() {
        let configuration = try! MeetingConfiguration(
            identity: Self.identity(1), keys: Self.keys, displayName: "me", sessionEpoch: 1, firstEnvelopeSequence: 1,
            randomSeed: 1)
        var core = MeetingCore(configuration: configuration, pins: IdentityPins(), muted: false, now: Self.start)
        let commands = core.handle(.rendezvousStopped(reason: "the meeting is full"), at: Self.start)
        #expect(
            commands.contains {
                if case .end(let failure) = $0 { failure == "cannot join: the meeting is full" } else { false }
            })
    }

    /// A peer whose packets came densely and fell silent is lost after 1 s, and the lead
    /// restarts ICE 0.2 s later; the core's deadline is exactly when that happens.
    @Test func silenceMakesALinkLostThenRestartedOnTime() {
        var harness = Harness()
        let id = Self.upLink(&harness)
        // Two more packets 250 ms apart (REPORTs in a DTX pause); the last at 0.5 s.
        for _ in 0..<2 {
            _ = harness.feed(
                .session(id, .stillAuthenticated(at: harness.now + .milliseconds(250), spacing: .milliseconds(250))),
                after: 0.25)
        }
        let lead = harness.me.publicKey.lexicographicallyPrecedes(harness.peer.publicKey)
        var states: [(Duration, LinkState)] = [(.zero, .up)]
        while harness.now - Self.start < .seconds(4) {
            harness.now = try! #require(harness.core.nextDeadline)
            let commands = harness.core.handle(.tick, at: harness.now)
            if commands.contains(where: { if case .restartPath(id, _) = $0 { true } else { false } }) {
                states.append((harness.now - Self.start, .restarting))
            }
            if let state = harness.core.links.first?.state, state != states.last?.1 {
                states.append((harness.now - Self.start, state))
            }
        }
        #expect(states.count > 1 && states[1].1 == .lost && states[1].0 == .milliseconds(1500), "\(states)")
        if lead { #expect(states.contains { $0.1 == .restarting && $0.0 == .milliseconds(1700) }, "\(states)") }
    }
}
