import ParleyCore
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

    @Test func initiatorConnectsAndStartsTheHandshake() {
        let result = Self.run(initiator: true, Self.connect)
        #expect(result.states == [.checking, .handshaking, .handshaking, .handshaking, .up])
        #expect(result.actions == [.startHandshake])
        #expect(result.link.reason == nil)
    }

    @Test func responderConnectsWithoutStartingAHandshake() {
        let result = Self.run(initiator: false, Self.connect)
        #expect(result.link.state == .up)
        #expect(result.actions.isEmpty)
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
        #expect(result.actions.isEmpty)
    }

    @Test func crashedPeerIsLostThenRestartedThenGoneWithinTenSeconds() {
        var steps = Self.connect
        steps += [(1.0, .packetReceived), (2.9, .tick), (3.1, .tick), (4.2, .tick), (8.5, .tick), (9.1, .tick)]
        let result = Self.run(initiator: true, steps)
        // Last packet at 1.0 s: lost at 3.0 s (2 s silence), restart 1 s later, gone at 9.0 s.
        #expect(Array(result.states.suffix(6)) == [.up, .up, .lost, .restarting, .restarting, .gone])
        #expect(result.actions == [.startHandshake, .restartICE, .remove])
        #expect(result.link.reason == "silent for 8.0 seconds")
    }

    @Test func onlyTheInitiatorRestartsOnItsOwn() {
        var steps = Self.connect
        steps += [(1.0, .packetReceived), (3.1, .tick), (4.2, .tick), (4.5, .restartRequested)]
        let result = Self.run(initiator: false, steps)
        #expect(result.states.suffix(3) == [.lost, .restarting, .restarting])
        // No restart of its own at 4.2 s; it follows the initiator's request at 4.5 s.
        #expect(result.actions == [.restartICE])
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
        #expect(result.actions == [.startHandshake, .restartICE, .startHandshake])
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
}
