import MeetingCore
import Testing

@Suite("Peer link state machine")
struct PeerLinkTests {
    static let start = ContinuousClock.now

    /// Drives a link with (seconds since start, event) steps; returns every action and the states
    /// visited after each step.
    static func run(
        initiator: Bool, _ steps: [(Double, PeerLink.Event)]
    ) -> (link: PeerLink, actions: [PeerLink.Action], states: [PeerLink.State]) {
        var link = PeerLink(isInitiator: initiator, now: start)
        var actions: [PeerLink.Action] = []
        var states: [PeerLink.State] = []
        for (seconds, event) in steps {
            actions += link.handle(event, at: start + .milliseconds(Int(seconds * 1000)))
            states.append(link.state)
        }
        return (link, actions, states)
    }

    static let connect: [(Double, PeerLink.Event)] = [
        (0.1, .remoteCredentials), (0.3, .iceReady), (0.35, .sessionEstablished), (0.4, .packetReceived),
        (0.5, .peerReceivesUs),
    ]

    /// Both sides start their session once the path is up: the session itself decides that the
    /// lead initiates and the other side only arms its fallback (§7.5).
    @Test(arguments: [true, false])
    func aPathThatComesUpStartsTheSessionOnce(initiator: Bool) {
        let result = Self.run(initiator: initiator, Self.connect + [(0.6, .iceReady)])
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
            [(0.1, .remoteCredentials), (0.3, .iceReady), (0.4, .packetReceived), (0.5, .peerReceivesUs)])
        #expect(noSession.link.state == .handshaking)
    }

    /// A responder's session, the peer's audio and the peer's REPORT can all arrive before its own
    /// ICE reports the path ready (the event travels a slower road than the packets). They count:
    /// the link is up the moment ICE is ready, not at the peer's next REPORT a second later.
    @Test func factsThatArriveBeforeICEIsReadyCount() {
        let result = Self.run(
            initiator: false,
            [
                (0.1, .remoteCredentials), (0.2, .sessionEstablished), (0.25, .packetReceived),
                (0.3, .peerReceivesUs), (0.35, .iceReady),
            ])
        #expect(result.states == [.checking, .checking, .checking, .checking, .up])
        #expect(result.actions == [.startSession(rehandshake: false)])
    }

    @Test func crashedPeerIsLostThenRestartedThenGoneWithinTenSeconds() {
        var steps = Self.connect
        steps += [(1.0, .packetReceived), (2.9, .tick), (3.1, .tick), (4.2, .tick), (8.5, .tick), (9.1, .tick)]
        let result = Self.run(initiator: true, steps)
        // Last packet at 1.0 s: lost at 3.0 s (2 s silence), restart 1 s later, gone at 9.0 s.
        #expect(Array(result.states.suffix(6)) == [.up, .up, .lost, .restarting, .restarting, .gone])
        #expect(result.actions == [.startSession(rehandshake: false), .restartICE, .remove])
        #expect(result.link.reason == "silent for 8.0 seconds")
    }

    @Test func onlyTheInitiatorRestartsOnItsOwn() {
        var steps = Self.connect
        steps += [(1.0, .packetReceived), (3.1, .tick), (4.2, .tick), (4.5, .restartRequested)]
        let result = Self.run(initiator: false, steps)
        #expect(result.states.suffix(3) == [.lost, .restarting, .restarting])
        // No restart of its own at 4.2 s; at 4.5 s it learns that it followed the initiator's
        // (the generation rule restarted its stream: nothing more to do).
        #expect(result.actions == [.startSession(rehandshake: false)])
    }

    @Test func aLostLinkThatHearsAgainIsUpAgain() {
        var steps = Self.connect
        steps += [(1.0, .packetReceived), (3.1, .tick), (3.2, .packetReceived)]
        let result = Self.run(initiator: true, steps)
        #expect(result.states.suffix(2) == [.lost, .up])
    }

    @Test func restartedLinkHandshakesAgain() {
        var steps = Self.connect
        steps += [
            (1.0, .packetReceived), (3.1, .tick), (4.2, .tick), (4.5, .iceReady), (4.6, .sessionEstablished),
            (4.7, .packetReceived), (4.8, .peerReceivesUs),
        ]
        let result = Self.run(initiator: true, steps)
        #expect(result.states.suffix(6) == [.lost, .restarting, .handshaking, .handshaking, .handshaking, .up])
        // The lead re-keys over the new path (§6.6 step 5).
        #expect(result.actions == [.startSession(rehandshake: false), .restartICE, .startSession(rehandshake: true)])
    }

    @Test func goodbyeRemovesFromAnyState() {
        for prefix in 0...Self.connect.count {
            let result = Self.run(initiator: true, Array(Self.connect.prefix(prefix)) + [(1.0, .left)])
            #expect(result.link.state == .gone)
            #expect(result.actions.last == .remove)
            #expect(result.link.reason == "left the meeting")
        }
    }

    /// The rendezvous restarting must not take down a link whose audio flows directly.
    @Test func rendezvousLeavingDoesNotDropAnUpLink() {
        let up = Self.run(initiator: true, Self.connect + [(1.0, .rendezvousLeft)])
        #expect(up.link.state == .up)
        let connecting = Self.run(initiator: true, [(0.1, .remoteCredentials), (1.0, .rendezvousLeft)])
        #expect(connecting.link.state == .gone)
    }

    @Test func aLinkThatCannotConnectIsRetriedNotDropped() {
        let steps: [(Double, PeerLink.Event)] = [
            (0.1, .remoteCredentials), (15.1, .tick), (17.0, .tick), (20.2, .tick), (60.0, .tick),
        ]
        let result = Self.run(initiator: true, steps)
        #expect(result.states == [.checking, .restarting, .restarting, .restarting, .restarting])
        #expect(result.actions == [.restartICE, .restartICE, .restartICE])
        #expect(result.link.reason == "could not connect within 15.0 seconds")
    }

    @Test func iceFailureWhileCheckingSaysWhy() {
        let result = Self.run(initiator: true, [(0.1, .remoteCredentials), (3.0, .iceFailed)])
        #expect(result.link.state == .restarting)
        #expect(result.link.reason == "ICE found no working path")
        #expect(result.actions == [.restartICE])
    }

    @Test func goneIsFinal() {
        let result = Self.run(initiator: true, [(0.1, .left), (0.2, .remoteCredentials), (0.3, .iceReady), (9, .tick)])
        #expect(result.states == [.gone, .gone, .gone, .gone])
        #expect(result.actions == [.remove])
    }

    /// The driver sleeps until `nextDeadline`: each timer the machine has must be there, and a
    /// tick at that moment must act.
    @Test func theNextDeadlineIsWhenATimerFires() {
        let t = { (seconds: Double) in Self.start + .milliseconds(Int(seconds * 1000)) }
        var link = PeerLink(isInitiator: true, now: Self.start)
        #expect(link.nextDeadline == t(15))  // connect timeout
        for (seconds, event) in Self.connect { _ = link.handle(event, at: t(seconds)) }
        _ = link.handle(.packetReceived, at: t(1))
        #expect(link.state == .up)
        #expect(link.nextDeadline == t(3))  // lost after 2 s of silence
        #expect(link.handle(.tick, at: t(2.999)).isEmpty && link.state == .up)
        _ = link.handle(.tick, at: t(3))
        #expect(link.state == .lost)
        #expect(link.nextDeadline == t(4))  // restart 1 s after lost
        #expect(link.handle(.tick, at: t(4)) == [.restartICE])
        #expect(link.nextDeadline == t(9))  // restart interval 5 s and gone after 8 s: the gone one
        #expect(link.handle(.tick, at: t(9)) == [.remove])
        #expect(link.nextDeadline == nil)
    }

    @Test func aRestartingLinkThatNeverConnectedRetriesOnItsInterval() {
        let t = { (seconds: Double) in Self.start + .milliseconds(Int(seconds * 1000)) }
        var link = PeerLink(isInitiator: true, now: Self.start)
        _ = link.handle(.remoteCredentials, at: t(0.1))
        #expect(link.handle(.iceFailed, at: t(1)) == [.restartICE])
        #expect(link.nextDeadline == t(6))
        #expect(link.handle(.tick, at: t(6)) == [.restartICE])
        var follower = PeerLink(isInitiator: false, now: Self.start)
        _ = follower.handle(.remoteCredentials, at: t(0.1))
        #expect(follower.handle(.iceFailed, at: t(1)).isEmpty)
        #expect(follower.nextDeadline == nil)  // waits for the lead's restart
    }
}
