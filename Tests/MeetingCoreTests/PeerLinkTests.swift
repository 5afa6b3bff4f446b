import ControlAPI
import MeetingCore
import ParleyCore
import Testing

@Suite("Peer link state machine")
struct PeerLinkTests {
    static let start = Instant.now

    static func at(_ seconds: Double) -> Instant { start + .milliseconds(Int(seconds * 1000)) }

    /// Drives a link with (seconds since start, event) steps; returns every action and the states
    /// visited after each step.
    static func run(
        initiator: Bool, _ steps: [(Double, PeerLink.Event)]
    ) -> (link: PeerLink, actions: [PeerLink.Action], states: [PeerLink.State]) {
        var link = PeerLink(isInitiator: initiator, now: start)
        var actions: [PeerLink.Action] = []
        var states: [PeerLink.State] = []
        for (seconds, event) in steps {
            actions += link.handle(event, at: at(seconds))
            states.append(link.state)
        }
        return (link, actions, states)
    }

    static let connect: [(Double, PeerLink.Event)] = [
        (0.1, .remoteCredentials), (0.3, .pathReady), (0.35, .sessionEstablished), (0.4, .packetReceived),
        (0.5, .peerReceivesUs),
    ]

    /// Both sides start their session once the path is up: the session itself decides that the
    /// lead initiates and the other side only arms its fallback (§7.5).
    @Test(arguments: [true, false])
    func aPathThatComesUpStartsTheSessionOnce(initiator: Bool) {
        let result = Self.run(initiator: initiator, Self.connect + [(0.6, .pathReady)])
        #expect(result.states == [.checking, .handshaking, .handshaking, .handshaking, .up, .up])
        #expect(result.actions == [.startSession(rehandshake: false)])
        #expect(result.link.reason == nil)
    }

    /// "up" means audio both ways: a session we hear but that does not hear us is not up.
    @Test func upNeedsTrafficBothWays() {
        let oneWay = Self.run(initiator: true, Array(Self.connect.prefix(4)))
        #expect(oneWay.link.state == .handshaking)
        let noSession = Self.run(
            initiator: true,
            [(0.1, .remoteCredentials), (0.3, .pathReady), (0.4, .packetReceived), (0.5, .peerReceivesUs)])
        #expect(noSession.link.state == .handshaking)
    }

    /// A responder's session, the peer's audio and the peer's REPORT can all arrive before its own
    /// ICE reports the path ready (the event travels a slower road than the packets). They count:
    /// the link is up the moment the path is ready, not at the peer's next REPORT a second later.
    @Test func factsThatArriveBeforeThePathIsReadyCount() {
        let result = Self.run(
            initiator: false,
            [
                (0.1, .remoteCredentials), (0.2, .sessionEstablished), (0.25, .packetReceived),
                (0.3, .peerReceivesUs), (0.35, .pathReady),
            ])
        #expect(result.states == [.checking, .checking, .checking, .checking, .up])
        #expect(result.actions == [.startSession(rehandshake: false)])
    }

    /// Silence: lost after 2 s when the peer only sent a REPORT a second, after 1 s when its
    /// packets came densely (media, or REPORTs every 250 ms in a pause) — a renumbered NAT or a
    /// cut path is noticed in about a second.
    @Test(arguments: [(1.0, 2.0), (0.25, 1.0)])
    func silenceMakesALinkLost(packetEvery: Double, lostAfter: Double) {
        var steps = Self.connect
        var time = 0.5
        for _ in 0..<8 {
            time += packetEvery
            steps.append((time, .packetReceived))
        }
        let lastPacket = time
        steps += [(lastPacket + lostAfter - 0.01, .tick), (lastPacket + lostAfter, .tick)]
        let result = Self.run(initiator: true, steps)
        #expect(Array(result.states.suffix(2)) == [.up, .lost])
        #expect(result.link.nextDeadline == Self.at(lastPacket + lostAfter + 0.2))
    }

    /// The handshake, the REPORT sent as the session came up and the one sent on our first media
    /// arrive within milliseconds; then the peer, whose audio has not started yet, REPORTs once a
    /// second. That is not dense: the link waits the 2 s of a peer that REPORTs once a second.
    /// (Before, the last gap alone decided, and peers called a joining node lost a second after
    /// its session came up whenever its next REPORT came a little over a second later.)
    @Test func packetsSentTogetherAreNotDense() {
        let steps =
            Self.connect + [
                (0.41, .packetReceived), (0.42, .packetReceived), (1.43, .tick), (2.41, .tick), (2.42, .tick),
            ]
        let result = Self.run(initiator: true, steps)
        #expect(Array(result.states.suffix(3)) == [.up, .up, .lost])
    }

    /// The lead restarts ICE 0.2 s after a link is lost; the other side follows its request.
    /// The lead restarts at once; the other side waits for the lead's restart and follows it,
    /// so the two rarely cross …
    @Test func theLeadRestartsAndTheOtherSideFollows() {
        let steps = Self.connect + [(1.0, .packetReceived), (3.0, .tick), (3.3, .tick)]
        let lead = Self.run(initiator: true, steps)
        #expect(lead.states.suffix(2) == [.lost, .restarting])
        #expect(lead.actions == [.startSession(rehandshake: false), .restartICE])
        let follower = Self.run(initiator: false, steps + [(3.5, .restartBegan), (4.0, .tick), (9.0, .tick)])
        #expect(follower.states.suffix(5) == [.lost, .restarting, .restarting, .restarting, .restarting])
        #expect(follower.actions == [.startSession(rehandshake: false)])
    }

    /// … but when only its own direction broke (its NAT renumbered: the lead still hears it from
    /// the new address and sees nothing wrong), no restart comes, and it restarts once itself.
    @Test func theOtherSideRestartsOnceWhenTheLeadDoesNot() {
        let steps = Self.connect + [(1.0, .packetReceived), (3.0, .tick), (3.3, .tick)]
        var follower = Self.run(initiator: false, steps).link
        #expect(follower.nextDeadline == Self.at(4.0))
        #expect(follower.handle(.tick, at: Self.at(3.9)) == [])
        #expect(follower.handle(.tick, at: Self.at(4.0)) == [.restartICE])
        #expect(follower.handle(.tick, at: Self.at(9.0)) == [])  // retries are the lead's
    }

    @Test func aLostLinkThatHearsAgainIsUpAgain() {
        let result = Self.run(
            initiator: true, Self.connect + [(1.0, .packetReceived), (3.1, .tick), (3.2, .packetReceived)])
        #expect(result.states.suffix(2) == [.lost, .up])
    }

    @Test func aRestartedLinkHandshakesAgainAndTheLeadRekeys() {
        let steps =
            Self.connect + [
                (1.0, .packetReceived), (3.0, .tick), (3.3, .tick), (3.5, .pathReady), (3.6, .sessionEstablished),
                (3.7, .packetReceived), (3.8, .peerReceivesUs),
            ]
        let result = Self.run(initiator: true, steps)
        #expect(result.states.suffix(6) == [.lost, .restarting, .handshaking, .handshaking, .handshaking, .up])
        #expect(result.actions == [.startSession(rehandshake: false), .restartICE, .startSession(rehandshake: true)])
    }

    /// A path found long into trouble (the peer was suspended for 20 s, and woke) gets the whole
    /// connect time for its handshake: it is not failed at the next tick for the old trouble.
    @Test func aPathFoundLateInTroubleGetsItsOwnTimeToHandshake() {
        let steps =
            Self.connect + [
                (1.0, .packetReceived), (3.0, .tick), (3.3, .tick), (18.0, .tick), (22.0, .pathReady), (22.1, .tick),
                (22.2, .sessionEstablished), (22.3, .packetReceived), (22.4, .peerReceivesUs),
            ]
        let result = Self.run(initiator: true, steps)
        #expect(
            result.states.suffix(7) == [
                .restarting, .failed, .handshaking, .handshaking, .handshaking, .handshaking, .up,
            ])
    }

    /// A pair that finds no path is `failed`, says why, and is retried with back-off — never
    /// silently given up, never removed while both are in the meeting.
    @Test func aPairWithNoPathFailsVisiblyAndIsRetriedWithBackOff() {
        var link = PeerLink(isInitiator: true, now: Self.start)
        _ = link.handle(.remoteCredentials, at: Self.at(0.1))
        #expect(link.handle(.pathFailed, at: Self.at(3)) == [.restartICE])
        #expect(link.state == .failed && link.reason == "ICE found no working path")
        var restarts: [Double] = [3]
        var time = 3.0
        while time < 300 {
            guard let deadline = link.nextDeadline else { break }
            time =
                Double((deadline - Self.start).components.seconds)
                + Double((deadline - Self.start).components.attoseconds) / 1e18
            if link.handle(.tick, at: deadline).contains(.restartICE) { restarts.append(time) }
            if link.state != .failed { break }
        }
        let gaps = zip(restarts, restarts.dropFirst()).map { ($1 - $0).rounded() }
        #expect(gaps.prefix(6) == [5, 10, 20, 40, 60, 60])
        #expect(link.state == .failed)
    }

    @Test func aLinkThatCannotConnectInTimeFailsWithWhy() {
        let result = Self.run(initiator: false, [(0.1, .remoteCredentials), (15.0, .tick)])
        #expect(result.link.state == .failed)
        #expect(result.link.reason == "could not connect within 15.0 seconds")
        #expect(result.actions.isEmpty)  // the follower waits for the lead's restart
    }

    @Test func aLostLinkThatStaysDownIsShownFailed() {
        let result = Self.run(
            initiator: true, Self.connect + [(1.0, .packetReceived), (3.0, .tick), (3.3, .tick), (18.0, .tick)])
        #expect(result.states.suffix(3) == [.lost, .restarting, .failed])
    }

    /// Removed only when the member leaves: it said so, or the rendezvous says its connection
    /// closed while we cannot hear it (a crash) — not while audio flows (a rendezvous restart).
    @Test func goodbyeRemovesFromAnyState() {
        for prefix in 0...Self.connect.count {
            let result = Self.run(initiator: true, Array(Self.connect.prefix(prefix)) + [(1.0, .left)])
            #expect(result.link.state == .gone)
            #expect(result.actions.last == .remove)
            #expect(result.link.reason == "left the meeting")
        }
    }

    @Test func theRendezvousLeavingDoesNotDropALinkThatWorks() {
        let up = Self.run(initiator: true, Self.connect + [(1.0, .rendezvousLeft)])
        #expect(up.link.state == .up)
        let connecting = Self.run(initiator: true, [(0.1, .remoteCredentials), (1.0, .rendezvousLeft)])
        #expect(connecting.link.state == .gone)
    }

    /// A crashed member: its rendezvous connection closes at once while its link still looks
    /// up; it is gone as soon as the link is lost.
    @Test func aMemberThatLeftTheRoomIsGoneOnceSilent() {
        let result = Self.run(
            initiator: true, Self.connect + [(1.0, .packetReceived), (1.1, .rendezvousLeft), (3.0, .tick)])
        #expect(result.states.suffix(2) == [.up, .gone])
        #expect(result.actions.last == .remove)
        let returned = Self.run(
            initiator: true,
            Self.connect + [(1.0, .packetReceived), (1.1, .rendezvousLeft), (1.2, .rendezvousReturned), (3.0, .tick)])
        #expect(returned.link.state == .lost)
    }

    /// A member that falls silent and is never heard of again is dropped after two minutes.
    @Test func aSilentMemberIsDroppedEventually() {
        let result = Self.run(
            initiator: true, Self.connect + [(1.0, .packetReceived), (3.0, .tick), (120.9, .tick), (121.0, .tick)])
        #expect(result.states.suffix(2) == [.restarting, .gone])
        #expect(result.link.reason == "silent for 120.0 seconds")
    }

    @Test func goneIsFinal() {
        let result = Self.run(
            initiator: true, [(0.1, .left), (0.2, .remoteCredentials), (0.3, .pathReady), (9, .tick)])
        #expect(result.states == [.gone, .gone, .gone, .gone])
        #expect(result.actions == [.remove])
    }

    /// The driver sleeps until `nextDeadline`: each timer must be there, and a tick at that moment
    /// must act.
    @Test func theNextDeadlineIsWhenATimerFires() {
        var link = PeerLink(isInitiator: true, now: Self.start)
        #expect(link.nextDeadline == Self.at(15))  // connect timeout
        for (seconds, event) in Self.connect { _ = link.handle(event, at: Self.at(seconds)) }
        _ = link.handle(.packetReceived, at: Self.at(1))
        #expect(link.state == .up)
        #expect(link.nextDeadline == Self.at(3))  // lost after 2 s of sparse silence
        #expect(link.handle(.tick, at: Self.at(2.999)).isEmpty && link.state == .up)
        _ = link.handle(.tick, at: Self.at(3))
        #expect(link.state == .lost)
        #expect(link.nextDeadline == Self.at(3.2))
        #expect(link.handle(.tick, at: Self.at(3.2)) == [.restartICE])
        #expect(link.nextDeadline == Self.at(8.2))  // the next restart, 5 s later
    }
}
