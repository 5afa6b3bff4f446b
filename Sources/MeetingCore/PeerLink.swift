public import ControlAPI

/// The life of one peer link in the mesh, as a plain state machine: the node feeds it facts
/// (signaling arrived, ICE state, handshake done, packets seen, time passing) and runs the actions
/// it returns. It never reads a clock or does I/O, so every path is testable with made-up times.
///
///     signaling → checking → handshaking → up ⇄ lost → restarting → handshaking → up …
///                                                   ↘ gone (left, or silent too long)
public struct PeerLink: Sendable {
    /// The states, as `parley status` shows them (`LinkState`: signaling, checking, handshaking,
    /// up, lost, restarting, gone).
    public typealias State = LinkState

    public enum Event: Sendable, Equatable {
        /// The peer's ICE credentials arrived (first time or after a restart).
        case remoteCredentials
        /// ICE selected a working pair.
        case iceReady
        /// ICE gave up (all checks failed, or consent was lost).
        case iceFailed
        /// The Noise handshake completed; a transport session exists.
        case sessionEstablished
        /// An authenticated packet arrived from the peer over the session.
        case packetReceived
        /// The peer reports that it receives our packets (its receiver report counts some).
        case peerReceivesUs
        /// The peer restarted ICE and we followed it (§6.6 step 5): the path is being replaced.
        case restartRequested
        /// The peer said goodbye (authenticated BYE).
        case left
        /// The rendezvous says the peer's connection closed. Not proof the peer is gone: the
        /// rendezvous may have restarted while audio still flows directly.
        case rendezvousLeft
        /// Time passed; lets timeouts fire.
        case tick
    }

    public enum Action: Sendable, Equatable {
        /// A path is up: start the session over it (the pair's lead initiates the handshake, the
        /// other side arms its fallback, §7.5). `rehandshake`: drop the keys first, so the lead
        /// re-keys over the new path after an ICE restart (§6.6 step 5).
        case startSession(rehandshake: Bool)
        /// Restart ICE on this peer's stream and send the new credentials.
        case restartICE
        /// Forget the peer: close its stream, session and audio channel.
        case remove
    }

    /// How long things may take before the machine acts. The defaults remove a crashed peer in
    /// well under 10 s (lost after 2 s of silence, restarted 1 s later, gone after 8 s).
    public struct Timing: Sendable, Equatable {
        /// Silence (no authenticated packet) after which an up link counts as lost.
        public var lostAfter: Duration = .seconds(2)
        /// How long a link stays visibly lost before an ICE restart is tried (a short burst of
        /// loss heals by itself; a dead path does not).
        public var restartAfterLost: Duration = .seconds(1)
        /// Silence after which a lost or restarting link is removed.
        public var goneAfter: Duration = .seconds(8)
        /// How long signaling, checks and handshake may take before an ICE restart is tried.
        public var connectTimeout: Duration = .seconds(15)
        /// Pause between restart attempts while a link cannot connect.
        public var restartInterval: Duration = .seconds(5)

        public init() {}
    }

    public private(set) var state: State = .signaling
    /// Whether this side initiates handshakes and ICE restarts (a deterministic rule on the two
    /// identities, so exactly one side does).
    public let isInitiator: Bool
    public let timing: Timing
    /// Why the link is not up, for status displays (e.g. "ICE failed: no usable path").
    public private(set) var reason: String?

    private var enteredState: ContinuousClock.Instant
    private var lastPacket: ContinuousClock.Instant?
    private var lastRestart: ContinuousClock.Instant?
    private var hasSession = false
    private var peerHears = false
    private var weHear = false

    public init(isInitiator: Bool, now: ContinuousClock.Instant, timing: Timing = Timing()) {
        self.isInitiator = isInitiator
        self.timing = timing
        self.enteredState = now
    }

    /// Feeds one fact; returns what the node must do now.
    public mutating func handle(_ event: Event, at now: ContinuousClock.Instant) -> [Action] {
        guard state != .gone else { return [] }
        switch event {
        case .left:
            return enter(.gone, at: now, reason: "left the meeting")
        case .rendezvousLeft:
            // While audio flows directly the rendezvous's view does not matter; a peer that never
            // connected and has left the room is gone.
            return state == .up || state == .lost ? [] : enter(.gone, at: now, reason: "left before connecting")
        case .remoteCredentials:
            return state == .signaling ? enter(.checking, at: now) : []
        case .iceReady:
            switch state {
            case .signaling, .checking:
                // The first path. The peer may have been quicker: a responder can have the session,
                // the peer's audio and its REPORT before its own ICE says ready (packets come
                // straight off the socket; the ICE event takes the slower road through the
                // node's mailbox). Those facts are about this path: keep them.
                return enter(.handshaking, at: now) + [.startSession(rehandshake: false)] + promoteIfFlowing(at: now)
            case .restarting:
                // What we knew is about the old path: the new one must show it all again.
                hasSession = false
                peerHears = false
                weHear = false
                return enter(.handshaking, at: now) + [.startSession(rehandshake: isInitiator)]
            default:
                return []
            }
        case .iceFailed:
            switch state {
            case .signaling, .checking, .handshaking:
                reason = "ICE found no working path"
                return restart(at: now)
            case .up:
                return enter(.lost, at: now, reason: "ICE path failed")
            default:
                return []
            }
        case .sessionEstablished:
            hasSession = true
            return promoteIfFlowing(at: now)
        case .packetReceived:
            lastPacket = now
            weHear = true
            if state == .lost || state == .restarting, hasSession, peerHears {
                return enter(.up, at: now)
            }
            return promoteIfFlowing(at: now)
        case .peerReceivesUs:
            peerHears = true
            return promoteIfFlowing(at: now)
        case .restartRequested:
            guard state != .signaling else { return [] }
            // The restart itself was carried out by the generation rule; ours waits its turn.
            lastRestart = now
            return enter(.restarting, at: now, reason: "peer restarted ICE")
        case .tick:
            return tick(at: now)
        }
    }

    /// When `handle(.tick, at:)` next has something to do, if no other fact comes first.
    public var nextDeadline: ContinuousClock.Instant? {
        switch state {
        case .up:
            return lastPacket.map { $0 + timing.lostAfter }
        case .lost, .restarting:
            var deadlines: [ContinuousClock.Instant] = []
            if let lastPacket { deadlines.append(lastPacket + timing.goneAfter) }
            if state == .lost {
                deadlines.append(enteredState + timing.restartAfterLost)
            } else if isInitiator {
                deadlines.append(lastRestart.map { $0 + timing.restartInterval } ?? enteredState)
            }
            return deadlines.min()
        case .signaling, .checking, .handshaking:
            return enteredState + timing.connectTimeout
        case .gone:
            return nil
        }
    }

    private mutating func promoteIfFlowing(at now: ContinuousClock.Instant) -> [Action] {
        guard state == .handshaking, hasSession, weHear, peerHears else { return [] }
        return enter(.up, at: now)
    }

    private mutating func tick(at now: ContinuousClock.Instant) -> [Action] {
        switch state {
        case .up:
            if let lastPacket, now - lastPacket >= timing.lostAfter {
                return enter(.lost, at: now, reason: "no packets for \(timing.lostAfter)")
            }
            return []
        case .lost, .restarting:
            // A peer that once sent packets and fell silent has crashed or lost its network. One
            // that never connected is kept (and retried) while it is in the room: it may only be
            // unreachable for now; `rendezvousLeft` removes it when it goes.
            if let lastPacket, now - lastPacket >= timing.goneAfter {
                return enter(.gone, at: now, reason: "silent for \(timing.goneAfter)")
            }
            let due =
                state == .lost
                ? now - enteredState >= timing.restartAfterLost
                : lastRestart.map { now - $0 >= timing.restartInterval } ?? true
            return due ? restart(at: now) : []
        case .signaling, .checking, .handshaking:
            if now - enteredState >= timing.connectTimeout {
                reason = "could not connect within \(timing.connectTimeout)"
                return restart(at: now)
            }
            return []
        case .gone:
            return []
        }
    }

    /// Only the initiator restarts ICE on its own (the other side follows its request), so two
    /// restarts never cross.
    private mutating func restart(at now: ContinuousClock.Instant) -> [Action] {
        let actions = enter(.restarting, at: now, reason: reason)
        guard isInitiator else { return actions }
        lastRestart = now
        return actions + [.restartICE]
    }

    private mutating func enter(_ next: State, at now: ContinuousClock.Instant, reason: String? = nil) -> [Action] {
        guard next != state else { return [] }
        // A restart keeps the original silence clock: only packets prove the peer is alive.
        if !(state == .lost && next == .restarting) { enteredState = now }
        state = next
        self.reason = next == .up ? nil : (reason ?? self.reason)
        return next == .gone ? [.remove] : []
    }
}
