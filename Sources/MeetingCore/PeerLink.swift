public import ControlAPI
public import ParleyCore

/// The life of one peer link in the mesh, as a plain state machine: the node feeds it facts
/// (signaling arrived, a path works or failed, handshake done, packets seen, time passing) and
/// runs the actions it returns. It never reads a clock or does I/O, so every path is testable
/// with made-up times.
///
///     signaling → checking → handshaking → up ⇄ lost → restarting → handshaking → up …
///                      ↘ failed (no path; retried with back-off) ↗       ↘ gone (the member left)
///
/// A link is removed only when its member leaves: it said so (BYE, LEAVE), or the rendezvous says
/// its connection closed while we cannot hear it, or it has been silent for `Timing.silentGoneAfter`.
/// A pair that cannot connect is `failed`, with a reason, and keeps being retried.
public struct PeerLink: Sendable {
    /// The states, as `parley status` shows them.
    public typealias State = LinkState

    public enum Event: Sendable, Equatable {
        /// The peer's ICE credentials arrived (first time or after a restart).
        case remoteCredentials
        /// A path to the peer works: ICE selected a pair, or the link was routed through a member.
        case pathReady
        /// ICE gave up on this generation (all checks failed, or no path before its deadline).
        case pathFailed
        /// The Noise handshake completed; a transport session exists.
        case sessionEstablished
        /// An authenticated packet arrived from the peer over the session (reported at most every
        /// 250 ms or so: liveness is judged in seconds).
        case packetReceived
        /// Packets keep arriving: the latest at the time given with this event, which may be
        /// earlier than a packet already counted (a held fact); `spacing` after the one before
        /// it that the meeting was told of, which says how densely they come.
        case stillReceiving(spacing: Duration)
        /// The peer's media comes through a member (§15.2): what comes over this link is sparse
        /// now, whatever it was.
        case mediaElsewhere
        /// The peer reports that it receives our packets (its receiver report counts some).
        case peerReceivesUs
        /// An ICE restart began (the peer asked for one and we followed, or this node restarted its
        /// paths after its network changed or it woke up).
        case restartBegan
        /// The peer said goodbye (authenticated BYE or LEAVE).
        case left
        /// The rendezvous says the peer's connection closed. Not proof the peer is gone: the
        /// rendezvous may have restarted while audio still flows directly.
        case rendezvousLeft
        /// The peer is in the rendezvous room again (its HELLO came through it).
        case rendezvousReturned
        /// Time passed; lets timeouts fire.
        case tick
    }

    public enum Action: Sendable, Equatable {
        /// A path is up: start the session over it (the pair's lead initiates the handshake, the
        /// other side arms its fallback, §7.5). `rehandshake`: drop the keys first, so the lead
        /// re-keys over the new path after an ICE restart (§6.6 step 5).
        case startSession(rehandshake: Bool)
        /// Restart ICE on this peer's stream and send the new credentials (only the lead is told
        /// to on its own; the other side follows its ICE_RESTART).
        case restartICE
        /// Forget the peer: close its stream, session and audio channel.
        case remove
    }

    /// How long things may take before the machine acts.
    public struct Timing: Sendable, Equatable {
        /// Silence (no authenticated packet) after which an up link counts as lost, when the peer
        /// only sends a REPORT a second …
        public var lostAfter: Duration = .seconds(2)
        /// … and when packets came densely (media, or REPORTs every 250 ms in a DTX pause): three
        /// or more missing in a row are no longer bad luck (0.1 % of the time at 10 % loss), and
        /// every 100 ms sooner is 100 ms less of a gap after a renumbered NAT or a cut path.
        public var quickLostAfter: Duration = .milliseconds(1000)
        /// Packets this close together make a link dense …
        public var denseInterval: Duration = .milliseconds(400)
        /// … measured between arrivals at least this far apart: packets sent together are not
        /// dense. As a session comes up, the handshake, the REPORT sent on it and the one sent on
        /// the first media arrive within milliseconds, yet a peer whose audio has not started
        /// REPORTs only once a second (measured in the NAT lab: peers called a joining node whose
        /// PulseAudio capture was starting lost a second after its session came up). A DTX
        /// pause's REPORTs, 250 ms apart, are each measured.
        public var spacingSample: Duration = .milliseconds(200)
        /// How long a link stays visibly lost before an ICE restart is tried (a short burst of
        /// loss heals by itself; a dead path does not).
        public var restartAfterLost: Duration = .milliseconds(200)
        /// How long the other side waits, once its link is lost, for the lead's restart before
        /// restarting once itself: when only this side's direction broke (its NAT renumbered, and
        /// the lead still hears it from the new address), the lead sees nothing wrong.
        public var followerRestartAfter: Duration = .seconds(1)
        /// How long signaling, checks and handshake may take before the first connection counts
        /// as failed.
        public var connectTimeout: Duration = .seconds(15)
        /// Restarts while a link does not work: the first this long after the last, doubling up
        /// to `maximumRestartInterval`.
        public var restartInterval: Duration = .seconds(5)
        public var maximumRestartInterval: Duration = .seconds(60)
        /// A lost link still not up this long after it was lost is shown `failed`.
        public var failAfter: Duration = .seconds(15)
        /// Silence after which a member is dropped even though nobody said it left (it may have
        /// crashed while the rendezvous was down).
        public var silentGoneAfter: Duration = .seconds(120)

        public init() {}
    }

    public private(set) var state: State = .signaling
    /// Whether this side initiates handshakes and ICE restarts (a deterministic rule on the two
    /// identities, so exactly one side does).
    public let isInitiator: Bool
    public let timing: Timing
    /// Why the link is not up, for status displays (e.g. "ICE found no working path").
    public private(set) var reason: String?
    /// Whether the link has ever been up.
    public private(set) var wasUp = false

    private var enteredState: Instant
    private var lastPacket: Instant?
    /// The latest arrival the spacing was measured at, and the spacing between the last two such
    /// (`Timing.spacingSample`).
    private var sampledAt: Instant?
    private var packetSpacing: Duration?
    /// When the peer's media last came through a member (§15.2).
    private var mediaElsewhereAt: Instant?
    private var lastRestart: Instant?
    /// Restarts since the link last worked (for the back-off).
    private var restartsWithoutSuccess = 0
    /// When the link stopped working (lost, or started and not yet up).
    private var troubleStart: Instant
    private var hasSession = false
    private var peerHears = false
    private var weHear = false
    /// The rendezvous said the member's connection closed, and nothing since said it is back.
    private var leftRoom = false
    /// An ICE restart began and its new path has not come up yet: when it does, the lead re-keys
    /// over it (§6.6 step 5) even if the link recovered over the old path meanwhile.
    private var restartPending = false

    public init(isInitiator: Bool, now: Instant, timing: Timing = Timing()) {
        self.isInitiator = isInitiator
        self.timing = timing
        enteredState = now
        troubleStart = now
    }

    /// When the link stopped working (lost, or started and not yet up); nil while up.
    public var troubleSince: Instant? { state == .up ? nil : troubleStart }

    /// The silence after which this link counts as lost: shorter when packets came densely —
    /// unless the peer's media lately came through a member (§15.2), when only its REPORTs come
    /// this way, however densely its last direct packets came.
    public var silenceLimit: Duration {
        let dense = packetSpacing.map { $0 <= timing.denseInterval } ?? false
        let elsewhere = mediaElsewhereAt.map { at in lastPacket.map { $0 - at < timing.lostAfter } ?? true } ?? false
        return dense && !elsewhere ? timing.quickLostAfter : timing.lostAfter
    }

    /// Feeds one fact; returns what the node must do now.
    public mutating func handle(_ event: Event, at now: Instant) -> [Action] {
        guard state != .gone else { return [] }
        switch event {
        case .left:
            return enter(.gone, at: now, reason: "left the meeting")
        case .rendezvousLeft:
            leftRoom = true
            // While audio flows directly the rendezvous's view does not matter (it may have
            // restarted); a member that left the room and that we cannot hear is gone.
            return state == .up
                ? []
                : enter(
                    .gone, at: now, reason: wasUp ? "left the meeting (connection closed)" : "left before connecting")
        case .rendezvousReturned:
            leftRoom = false
            return []
        case .remoteCredentials:
            return state == .signaling ? enter(.checking, at: now) : []
        case .pathReady:
            switch state {
            case .signaling, .checking:
                // The first path. The peer may have been quicker: a responder can have the session,
                // the peer's audio and its REPORT before its own ICE says ready (packets come
                // straight off the socket; the ICE event takes the slower road through the
                // node's mailbox). Those facts are about this path: keep them.
                return enter(.handshaking, at: now) + [.startSession(rehandshake: false)] + promoteIfFlowing(at: now)
            case .restarting, .failed, .lost:
                // What we knew is about the old path: the new one must show it all again, and it
                // gets its own time to (a path found 20 s into trouble, when a suspended peer
                // woke, was failed at the next tick for the old trouble's 15 s).
                troubleStart = now
                restartPending = false
                hasSession = false
                peerHears = false
                weHear = false
                return enter(.handshaking, at: now) + [.startSession(rehandshake: isInitiator && wasUp)]
            case .up:
                guard restartPending else { return [] }
                restartPending = false
                return [.startSession(rehandshake: isInitiator)]
            case .handshaking, .gone:
                return []
            }
        case .pathFailed:
            switch state {
            case .signaling, .checking, .handshaking:
                return fail(at: now, reason: "ICE found no working path")
            case .up:
                return enter(.lost, at: now, reason: "ICE path failed")
            case .restarting:
                return timeSinceTrouble(now) >= timing.failAfter
                    ? fail(at: now, reason: "ICE found no working path") : []
            case .lost, .failed, .gone:
                return []
            }
        case .sessionEstablished:
            hasSession = true
            return promoteIfFlowing(at: now)
        case .packetReceived:
            if sampledAt.map({ now - $0 >= timing.spacingSample }) ?? true {
                if let sampledAt { packetSpacing = now - sampledAt }
                sampledAt = now
            }
            lastPacket = now
            return heard(at: now)
        case .stillReceiving(let spacing):
            // Said at most every 250 ms, with the time since the last: a sample of its own.
            packetSpacing = spacing
            sampledAt = now
            // A held fact's packet may be older than one counted since (a REPORT's).
            lastPacket = max(lastPacket ?? now, now)
            return heard(at: now)
        case .mediaElsewhere:
            mediaElsewhereAt = now
            return []
        case .peerReceivesUs:
            peerHears = true
            return promoteIfFlowing(at: now)
        case .restartBegan:
            guard state != .signaling else { return [] }
            restartPending = true
            lastRestart = now
            restartsWithoutSuccess += 1
            if state == .failed || state == .restarting { return [] }
            if state == .up || state == .lost { troubleStart = now }
            return enter(.restarting, at: now, reason: reason ?? "ICE restart")
        case .tick:
            return tick(at: now)
        }
    }

    /// When `handle(.tick, at:)` next has something to do, if no other fact comes first.
    public var nextDeadline: Instant? {
        var deadlines: [Instant] = []
        if let lastPacket { deadlines.append(lastPacket + timing.silentGoneAfter) }
        switch state {
        case .up:
            if let lastPacket { deadlines.append(lastPacket + silenceLimit) }
        case .lost:
            deadlines.append(enteredState + timing.restartAfterLost)
        case .restarting, .failed:
            if isInitiator { deadlines.append(nextRestart) }
            if state == .restarting { deadlines.append(troubleStart + timing.failAfter) }
            if followerAwaitsLead { deadlines.append(troubleStart + timing.followerRestartAfter) }
        case .signaling, .checking, .handshaking:
            deadlines.append(troubleStart + timing.connectTimeout)
        case .gone:
            return nil
        }
        return deadlines.min()
    }

    private var nextRestart: Instant {
        guard let lastRestart else { return enteredState }
        var interval = timing.restartInterval
        for _ in 1..<max(1, restartsWithoutSuccess) where interval < timing.maximumRestartInterval {
            interval = min(interval * 2, timing.maximumRestartInterval)
        }
        return lastRestart + interval
    }

    /// The other side, lost, has not seen a restart since the trouble began: the lead may not
    /// know (`Timing.followerRestartAfter`).
    private var followerAwaitsLead: Bool {
        !isInitiator && state == .restarting && lastRestart.map { $0 < troubleStart } ?? true
    }

    /// A packet came from the peer at `now`.
    private mutating func heard(at now: Instant) -> [Action] {
        weHear = true
        if state == .lost || state == .restarting || state == .failed, hasSession, peerHears {
            return enter(.up, at: now)
        }
        return promoteIfFlowing(at: now)
    }

    private mutating func promoteIfFlowing(at now: Instant) -> [Action] {
        guard state == .handshaking, hasSession, weHear, peerHears else { return [] }
        return enter(.up, at: now)
    }

    private func timeSinceTrouble(_ now: Instant) -> Duration { now - troubleStart }

    private mutating func tick(at now: Instant) -> [Action] {
        if let lastPacket, now - lastPacket >= timing.silentGoneAfter, state != .up {
            return enter(.gone, at: now, reason: "silent for \(timing.silentGoneAfter)")
        }
        switch state {
        case .up:
            if let lastPacket, now - lastPacket >= silenceLimit {
                troubleStart = now
                return enter(.lost, at: now, reason: "no packets for \(silenceLimit)")
            }
            return []
        case .lost:
            guard now - enteredState >= timing.restartAfterLost else { return [] }
            return restart(at: now)
        case .restarting:
            if timeSinceTrouble(now) >= timing.failAfter {
                return fail(at: now, reason: reason ?? "no path")
            }
            if followerAwaitsLead, now - troubleStart >= timing.followerRestartAfter {
                return restart(at: now, evenIfFollower: true)
            }
            return isInitiator && now >= nextRestart ? restart(at: now) : []
        case .failed:
            return isInitiator && now >= nextRestart ? restart(at: now) : []
        case .signaling, .checking, .handshaking:
            if timeSinceTrouble(now) >= timing.connectTimeout {
                return fail(at: now, reason: "could not connect within \(timing.connectTimeout)")
            }
            return []
        case .gone:
            return []
        }
    }

    /// No path works: say so and keep trying (the lead restarts on the back-off schedule).
    private mutating func fail(at now: Instant, reason: String) -> [Action] {
        if leftRoom { return enter(.gone, at: now, reason: "left the meeting (connection closed)") }
        let actions = enter(.failed, at: now, reason: reason)
        guard isInitiator, now >= nextRestart else { return actions }
        return actions + restart(at: now)
    }

    /// Only the lead restarts ICE on its own (the other side follows its request), so two
    /// restarts rarely cross; a link that keeps failing is retried less and less often. The
    /// other side restarts once per trouble if the lead does not (`followerRestartAfter`).
    private mutating func restart(at now: Instant, evenIfFollower: Bool = false) -> [Action] {
        if leftRoom { return enter(.gone, at: now, reason: "left the meeting (connection closed)") }
        let actions = state == .failed ? [] : enter(.restarting, at: now, reason: reason)
        guard isInitiator || evenIfFollower else { return actions }
        lastRestart = now
        restartsWithoutSuccess += 1
        restartPending = true
        return actions + [.restartICE]
    }

    private mutating func enter(_ next: State, at now: Instant, reason: String? = nil) -> [Action] {
        guard next != state else {
            if let reason, next != .up { self.reason = reason }
            return []
        }
        enteredState = now
        state = next
        if next == .up {
            wasUp = true
            restartsWithoutSuccess = 0
            self.reason = nil
        } else {
            self.reason = reason ?? self.reason
        }
        if next == .lost, leftRoom {
            return enter(.gone, at: now, reason: "left the meeting (connection closed)")
        }
        return next == .gone ? [.remove] : []
    }
}
