import ControlAPI
public import ParleyCore
public import ParleyProtocol
import RendezvousWire

/// One meeting's logic as a plain value (sans-I/O): it takes what happened — rendezvous events,
/// envelopes, ICE and session facts, the user's requests — each with the current time, and
/// returns what to do: envelopes to send, ICE streams to create, restart or remove, sessions to
/// start, REPORTs to send, events for `parley watch`. It never reads a clock, never awaits and
/// does no I/O, so a whole meeting runs in a test on a virtual clock (`MeetingSimulation`), and
/// the daemon's driver (`ParleyNode.MeetingDriver`) only carries its commands out.
///
/// A peer's record (`Peer`) holds everything known about it, its link included: one owner per
/// fact. Link lifecycles are `PeerLink`'s; the signaling rules of docs/PROTOCOL.md §6.6 are
/// `SignalingRules`'; the core obeys both.
public struct MeetingCore: Sendable {
    public let configuration: MeetingConfiguration

    /// Peers by identity key: every identity that sent us a valid HELLO in this meeting.
    var peers: [[UInt8]: Peer] = [:]
    /// The keys of `peers` in ascending order (the order every loop that sends or decides goes
    /// in, so runs are repeatable), kept beside the map: sorting on every input cost the
    /// simulator a tenth of its time.
    var peerOrder: [[UInt8]] = []
    /// Whether the mesh upkeep (routes, probes, LINKS) must look at the links again: something
    /// it depends on changed. The packets and REPORTs that make most inputs change nothing it
    /// reads unless they move a link's state or route, and its timed decisions have deadlines.
    var meshChanged = true
    /// Which peer each link belongs to.
    var linkOwners: [LinkID: [UInt8]] = [:]
    var nextLinkID = 1
    var sequencer: EnvelopeSequencer
    var replayGuard = EnvelopeReplayGuard()
    var pins: IdentityPins
    var rendezvous: RendezvousConnectionState = .connecting
    var admitted = false
    var agent: AgentState = .none
    var ended = false
    public private(set) var muted: Bool
    /// Whether this node records the meeting (§14.2: every version-3 peer is told).
    public internal(set) var recording = false
    /// DTX holds our media back (silent or muted): no media flows from us right now.
    var paused = false
    /// The audio engine stopped (a device failed) or never started: no media flows from us for the
    /// rest of the meeting, whatever DTX said last.
    var withoutAudio = false
    /// While `sendsNoMedia`: when REPORTs next go to every link together (§10.1, at least every
    /// 250 ms).
    var nextPausedReports: Instant?
    var encoderLoss: Double?
    /// The send-side bandwidth estimate (nil: `--fixed-rate`).
    public internal(set) var sendRate: SendRate?
    /// The member our frames fan out through (§15), and where they go.
    var fanOut: (member: [UInt8], route: FanOutRoute)?
    /// Whether a copy per peer fits again, while one goes up.
    var fanOutProbe = FanOutProbe()
    /// Whether what the fan-out choice depends on changed (the estimate, LINKS, refusals, links).
    var fanOutStale = false
    /// When at least half of the links (two or more) last said together that our media queues:
    /// our uplink, not one peer's downlink, is full.
    var uplinkCongestedAt: Instant?
    /// The security code's commit/reveal agreement (§11.1), and when its view is next taken
    /// (the member set is left to settle a moment after a change, so a join of many at once is
    /// one round, not one per link).
    var codeAgreement: SecurityCodeAgreement
    var codeViewDue: Instant?
    var publishedCode: SecurityCode?
    var random: SeededGenerator
    /// HELLOs from identities never seen before that may still start a link (finding 3).
    var newIdentities: TokenBucket
    var newIdentitiesRefused = 0
    /// The time of the first input: the origin of the token bucket's clock.
    let origin: Instant
    /// What this node last told the data path it relays, and the members LINKS last listed.
    var relayPolicy: RelayPolicy?
    var linksSent: [[UInt8]] = []
    /// Chat (§14.1): the streams with each peer identity (kept across links while its epoch
    /// holds), the log, and the sender's rate limit.
    var chatStreams: [[UInt8]: ChatStreams] = [:]
    var chatLog: [ChatEntry] = []
    var chatRate: TokenBucket
    /// The time of the latest input.
    var now: Instant
    /// Commands of the input being handled.
    var output: [MeetingCommand] = []

    enum AgentState: Equatable {
        case none, creating, ready
    }

    /// - Parameters:
    ///   - pins: the room's identity pins as loaded from the state directory (§11.2).
    ///   - muted: whether the node starts muted.
    public init(
        configuration: MeetingConfiguration, pins: IdentityPins, muted: Bool, now: Instant
    ) {
        self.configuration = configuration
        self.pins = pins
        self.muted = muted
        self.now = now
        sequencer = EnvelopeSequencer(start: configuration.firstEnvelopeSequence)
        codeAgreement = SecurityCodeAgreement(
            roomID: configuration.keys.roomID,
            me: CodeMember(identityKey: configuration.identity.publicKey, name: configuration.displayName))
        random = SeededGenerator(seed: configuration.randomSeed)
        origin = now
        newIdentities = TokenBucket(
            rate: configuration.newIdentityRate, capacity: configuration.newIdentityBurst, now: 0)
        chatRate = TokenBucket(rate: ChatLimits.perSecond, capacity: ChatLimits.burst, now: 0)
        sendRate = configuration.sendRateRange.map { SendRate(maximum: $0.upperBound, minimum: $0.lowerBound) }
    }

    // MARK: Inputs

    /// Handles one input at `now` (never earlier than the previous input's time) and returns
    /// what to do, in order.
    public mutating func handle(_ input: MeetingInput, at now: Instant) -> [MeetingCommand] {
        step(at: now, changesMesh: !input.isPacketFact, runsTimers: !input.isHeldLiveness) { $0.dispatch(input) }
    }

    /// Runs `body` as one input at `now`: the clock, the resume check, the timers and the next
    /// deadline around it, as every input gets them — but the timers not for held liveness
    /// (`.stillAuthenticated`): a driver hands the links' held facts over one by one just before
    /// another input, and a link's silence must not be judged while its own fact is still to come.
    mutating func step(
        at now: Instant, changesMesh: Bool, runsTimers: Bool = true,
        _ body: (inout MeetingCore) -> Void
    ) -> [MeetingCommand] {
        guard !ended else { return [] }
        self.now = max(self.now, now)
        if changesMesh { meshChanged = true }
        // Inputs far later than the deadline last given to the driver mean the process slept.
        if let expectedBy = nextDeadline, now - expectedBy >= configuration.timing.resumeAfter {
            resumed(after: now - expectedBy)
        }
        body(&self)
        if !ended, runsTimers { runTimers() }
        nextDeadline = ended ? nil : earliestDeadline
        defer { output = [] }
        return output
    }

    mutating func dispatch(_ input: MeetingInput) {
        switch input {
        case .start:
            publish(ControlEvent(kind: .meeting, state: .joining))
            codeViewDue = now
        case .rendezvousJoined(let welcome, let reconnected):
            rendezvousJoined(welcome, reconnected: reconnected)
        case .rendezvousMemberJoined:
            break  // its HELLO follows
        case .rendezvousMemberLeft(let member):
            memberLeft(member)
        case .rendezvousDelivered(let member, let payload):
            envelopeDelivered(payload, from: member)
        case .rendezvousDisconnected(let reason):
            rendezvous = .reconnecting
            log(.info, "rendezvous lost; audio continues", ["reason": reason])
            publish(ControlEvent(kind: .meeting, state: .rendezvousReconnecting, message: reason))
        case .rendezvousStopped(let reason):
            rendezvousStopped(reason)
        case .iceAgentReady:
            agent = .ready
            log(.info, "ICE ready")
            for key in peers.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                if let link = peers[key]?.link, !link.pathRequested { requestPath(for: key) }
            }
            send(hello(), to: nil)
        case .iceAgentFailed(let reason):
            end(failure: "cannot set up ICE: \(reason)")
        case .path(let id, let fact):
            pathFact(fact, on: id)
        case .session(let id, let fact):
            sessionFact(fact, on: id)
        case .audio(let fact):
            audioFact(fact)
        case .setMuted(let value):
            muted = value
            output.append(.setMuted(value))
        case .setRecording(let value):
            setRecording(value)
        case .leave:
            leave()
        case .localAddressesChanged:
            restartAllLinks(why: "this machine's addresses changed")
        case .tick:
            break
        }
    }

    /// When the core next needs a `.tick`, if nothing else happens first (as of the last input).
    public private(set) var nextDeadline: Instant?

    /// `nextDeadline`, worked out once per input: the driver, the simulator and the resume
    /// check all read it.
    var earliestDeadline: Instant? {
        var earliest = codeViewDue
        for peer in peers.values {
            guard let link = peer.link else { continue }
            earliest = Self.earlier(earliest, link.machine.nextDeadline)
            if link.relay != nil, link.machine.isInitiator { earliest = Self.earlier(earliest, link.nextProbe) }
            // When a link that has not connected may go through a member (only a deadline still
            // ahead: one that passed with nobody to relay must not wake the node over and over).
            let relayFrom = link.startedAt + configuration.timing.relayAfter
            if link.relay == nil, link.machine.state != .up, peer.version >= 2, relayFrom > now {
                earliest = Self.earlier(earliest, relayFrom)
            }
            if peer.version >= 2, link.machine.state != .up {
                let moments = [
                    link.relay == nil ? link.machine.troubleSince.map { $0 + configuration.timing.relayDelay } : nil,
                    link.relay != nil ? link.relayedSince.map { $0 + configuration.timing.relayTrial } : nil,
                ]
                for case let moment? in moments where moment > now { earliest = Self.earlier(earliest, moment) }
            }
            let notConnectedFrom = link.startedAt + configuration.timing.notConnectedAfter
            if !peer.verified, !peer.reportedNotConnected, notConnectedFrom > now {
                earliest = Self.earlier(earliest, notConnectedFrom)
            }
            if link.established, !sendsNoMedia { earliest = Self.earlier(earliest, link.nextReport) }
        }
        if sendsNoMedia { earliest = Self.earlier(earliest, nextPausedReports) }
        // The next probe (only a moment ahead: one due but waiting for a clean rate starts on
        // the REPORT that makes it clean), or the end of the one under way.
        if let current = fanOut, let moment = fanOutProbe.nextMoment(current.route.covered, at: now), moment > now {
            earliest = Self.earlier(earliest, moment)
        }
        earliest = Self.earlier(earliest, chatDeadline)
        return earliest
    }

    static func earlier(
        _ a: Instant?, _ b: Instant?
    ) -> Instant? {
        guard let a else { return b }
        guard let b else { return a }
        return min(a, b)
    }

    // MARK: Rendezvous

    mutating func rendezvousJoined(_ welcome: RendezvousWelcome, reconnected: Bool) {
        rendezvous = .connected
        if reconnected {
            // Member ids from the old connection mean nothing now (§4.3); HELLOs re-address.
            for key in peers.keys { peers[key]?.memberID = nil }
            publish(ControlEvent(kind: .meeting, state: .rendezvousConnected, message: "reconnected"))
        } else {
            publish(ControlEvent(kind: .meeting, state: .inMeeting, message: "\(welcome.members.count) others"))
        }
        log(.info, "admitted to the room", ["others": "\(welcome.members.count)"])
        if !admitted {
            admitted = true
            output.append(.admitted)
        }
        switch agent {
        case .none:
            agent = .creating
            output.append(.createICEAgent(services: welcome.services))
        case .creating:
            break  // HELLO goes out once the agent is ready
        case .ready:
            send(hello(), to: nil)
        }
    }

    mutating func memberLeft(_ member: RendezvousMemberID) {
        for key in peers.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) where peers[key]?.memberID == member {
            peers[key]?.memberID = nil
            if peers[key]?.link == nil {
                forget(key, reason: "left")  // never had a link (no common version): nothing to end
            } else {
                feed(.rendezvousLeft, toPeer: key)
            }
        }
    }

    mutating func rendezvousStopped(_ reason: String?) {
        guard let reason else { return }
        guard admitted else {
            log(.error, "the rendezvous refused this node", ["reason": reason])
            end(failure: "cannot join: \(reason)")
            return
        }
        rendezvous = .none
        warn("the rendezvous refused to take this node back (\(reason)); connected peers still hear you")
    }

    // MARK: Envelopes (§6)

    func hello() -> SignalingMessage { .hello(configuration.hello) }

    /// Seals an envelope to one peer (by identity key) or to everyone, and asks the driver to
    /// relay it. A peer without a member id (before its HELLO, after a reconnect) gets nothing:
    /// the link's timers and the re-sending on re-addressing (§6.6 steps 2 and 4) cover it.
    mutating func send(_ message: SignalingMessage, to key: [UInt8]?) {
        var envelopeRecipient = EnvelopeRecipient.everyone
        if let key {
            guard let peer = peers[key] else { return }
            envelopeRecipient = .peer(peer.identity)
        }
        let envelope: [UInt8]
        do {
            envelope = try Envelope.seal(
                message, to: envelopeRecipient, from: configuration.identity, sequence: sequencer.nextSequence(),
                keys: configuration.keys)
        } catch {
            log(.debug, "envelope not sealed", ["type": "\(message.kind)", "error": "\(error)"])
            return
        }
        // Through the rendezvous when it can carry it; over the members' sessions otherwise
        // (§13.5), so a link can restart while the rendezvous is away.
        let member = key.flatMap { peers[$0]?.memberID }
        if rendezvous == .connected, key == nil || member != nil {
            output.append(.sendEnvelope(envelope, to: member.map { .member($0) } ?? .everyone))
        } else {
            sendOverMesh(envelope, to: key)
        }
    }

    /// An envelope from the rendezvous (`member`), or over the mesh (nil).
    mutating func envelopeDelivered(_ payload: [UInt8], from member: RendezvousMemberID?) {
        let received: ReceivedEnvelope
        do {
            received = try Envelope.open(
                payload, as: configuration.identity, keys: configuration.keys, replayGuard: &replayGuard)
        } catch {
            // Another room's traffic, tampering, a replay: dropped, contents never logged.
            log(.debug, "envelope dropped", ["why": "\(error)"])
            return
        }
        if case .hello(let hello) = received.message {
            helloReceived(hello, broadcast: received.isBroadcast, from: member)
            return
        }
        let key = received.sender
        guard let link = peers[key]?.link else { return }
        switch received.message {
        case .hello:
            break
        case .iceCredentials(let credentials):
            let decision = SignalingRules.restartingMessage(
                generation: credentials.generation, current: link.generation)
            if case .restart(let generation) = decision { followRestart(of: key, to: generation) }
            guard decision != .ignore else { return }
            remoteSignal(
                .credentials(PathCredentials(ufrag: credentials.usernameFragment, password: credentials.password)),
                for: key)
        case .iceCandidate(let generation, let line):
            guard SignalingRules.candidateMessage(generation: generation, current: link.generation) == .apply else {
                return
            }
            remoteSignal(.candidate(line), for: key)
        case .iceCandidatesDone(let generation):
            guard SignalingRules.candidateMessage(generation: generation, current: link.generation) == .apply else {
                return
            }
            remoteSignal(.done, for: key)
        case .iceRestart(let generation):
            if case .restart(let target) = SignalingRules.restartingMessage(
                generation: generation, current: link.generation)
            {
                followRestart(of: key, to: target)
            }
        case .bye:
            feed(.left, toPeer: key)
        }
    }

    mutating func helloReceived(_ hello: Hello, broadcast: Bool, from member: RendezvousMemberID?) {
        let key = hello.identity.identityKey
        let known = peers[key]
        let common = hello.commonVersion(with: configuration.hello.protocolVersions)
        let decision = SignalingRules.hello(
            from: known.map { SignalingRules.KnownPeer(epoch: $0.epoch, hasLink: $0.link != nil) },
            epoch: hello.sessionEpoch, isBroadcast: broadcast, commonVersion: common)
        let readdressed = member != nil && known?.memberID != member
        if known == nil, !admitNewIdentity(key, from: member) { return }
        if let known {
            let renamed = known.name != hello.displayName
            if renamed {
                publish(
                    ControlEvent(kind: .peerJoined, peer: known.shortID, name: hello.displayName, message: "renamed"))
            }
            if renamed, known.link?.established == true { membersMayHaveChanged() }
            peers[key]?.name = hello.displayName
            // A new name is checked like a new member (finding 4): taking a name pinned to
            // another key, or one that looks like another member's, is warned about.
            if renamed {
                checkPin(key, pinning: known.verified)
                checkLookAlikes(of: key)
            }
            peers[key]?.epoch = hello.sessionEpoch
            if let member {
                peers[key]?.memberID = member
                if known.link != nil { feed(.rendezvousReturned, toPeer: key) }
            }
            if let common { peers[key]?.version = common }
        } else {
            let position = peerOrder.firstIndex { key.lexicographicallyPrecedes($0) } ?? peerOrder.endIndex
            peerOrder.insert(key, at: position)
            peers[key] = Peer(
                identity: hello.identity, name: hello.displayName, epoch: hello.sessionEpoch, memberID: member,
                version: common ?? 1)
            // A member's replay window stays while it is one (§6.4): a flood of fresh identities
            // cannot push it out and let an old HELLO of its through (finding 2).
            replayGuard.keep(key)
        }
        if decision.answer { send(self.hello(), to: key) }
        switch decision.link {
        case .keep:
            // Re-addressed (it reconnected to the rendezvous, or we did) while the link is not up:
            // what we sent meanwhile may have gone to a dead connection, so send it again.
            if let link = peers[key]?.link, link.machine.state != .up, readdressed { resendSignaling(to: key) }
            return
        case .incompatible:
            warn("\(hello.displayName) runs a Parley that speaks none of our protocol versions; they need to update")
            return
        case .replace:
            endLink(of: key, reason: "restarted (new session)")
        case .start:
            break
        }
        if known == nil {
            checkPin(key, pinning: false)
            checkLookAlikes(of: key)
        }
        if let peer = peers[key] { publish(ControlEvent(kind: .peerJoined, peer: peer.shortID, name: peer.name)) }
        startLink(for: key)
    }

    /// Whether a HELLO from an identity not in the meeting may add a peer (finding 3). A node has
    /// one identity, so a second identity on the same rendezvous connection replaces the first
    /// unless that one proved itself with a session; and fresh identities are rate-limited. One
    /// pinned in this room is not fresh: it proved itself with a session before (only such are
    /// pinned) and is back, maybe seconds after a meeting of 16 spent the burst.
    mutating func admitNewIdentity(_ key: [UInt8], from member: RendezvousMemberID?) -> Bool {
        guard pins.contains(identityKey: key) || newIdentities.take(now: nanosecondsSinceStart) else {
            newIdentitiesRefused += 1
            // Once per burst refused, not once per HELLO: the log must not grow with the flood.
            if newIdentitiesRefused == 1 || newIdentitiesRefused.isMultiple(of: 1000) {
                warn(
                    "too many new identities at once (\(newIdentitiesRefused) ignored): someone with the invite is flooding the room"
                )
            }
            return false
        }
        if let member {
            let squatters = peers.filter { $0.value.memberID == member && !$0.value.verified }.keys
            for key in squatters.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                forget(key, reason: "its rendezvous connection presented another identity")
            }
        }
        return true
    }

    /// The core's clock for its token buckets.
    var nanosecondsSinceStart: UInt64 {
        let elapsed = now - origin
        return UInt64(elapsed.components.seconds) * 1_000_000_000
            + UInt64(elapsed.components.attoseconds / 1_000_000_000)
    }

    /// Ends the peer's link and forgets it: it left, or was an unverified identity replaced by
    /// another. Its replay window becomes an ordinary one again.
    mutating func forget(_ key: [UInt8], reason: String) {
        endLink(of: key, reason: reason, announce: peers[key]?.verified == true)
        peers[key] = nil
        peerOrder.removeAll { $0 == key }
        replayGuard.release(key)
    }

    /// Checks the peer's name and key against the pins (§11.2): a name pinned to another key is
    /// warned about. `pinning`: record a new name or key (only for a verified peer: a pin of an
    /// identity that never proved itself would let a flood of them grow the file).
    mutating func checkPin(_ key: [UInt8], pinning: Bool) {
        guard let peer = peers[key] else { return }
        do {
            switch try pins.check(displayName: peer.name, identityKey: key) {
            case .known: return
            case .new, .renamed:
                guard pinning else { return }
                guard pins.pins.count < configuration.maximumPins else {
                    log(.warning, "pins file full; not pinned", ["peer": peer.shortID])
                    return
                }
                try? pins.pin(displayName: peer.name, identityKey: key)
                output.append(.savePins(pins))
            }
        } catch {
            // Warned at the HELLO; pinning only records what the check accepted.
            guard !pinning else { return }
            log(.warning, "identity key changed", ["peer": peer.shortID, "name": peer.name])
            publish(ControlEvent(kind: .warning, peer: peer.shortID, name: peer.name, message: "WARNING: \(error)"))
        }
    }

    /// Warns when the peer's name is, or looks like, another member's or ours (finding 4: `аlice`
    /// with a Cyrillic а next to `alice`). Both keep their names; the user is told to check the
    /// security code with them.
    mutating func checkLookAlikes(of key: [UInt8]) {
        guard let peer = peers[key] else { return }
        let skeleton = NameSkeleton(peer.name)
        var others = peers.filter { $0.key != key }.map { ($0.value.name, $0.value.shortID) }
        others.append((configuration.displayName, "you"))
        for (name, id) in others.sorted(by: { $0.1 < $1.1 }) where NameSkeleton(name) == skeleton {
            let what = name == peer.name ? "has the same name as" : "has a name that looks like"
            let message = "WARNING: \(peer.name) (\(peer.shortID)) \(what) \(name) (\(id)); compare the security code"
            log(.warning, "look-alike names", ["peer": peer.shortID, "other": id])
            publish(ControlEvent(kind: .warning, peer: peer.shortID, name: peer.name, message: message))
        }
    }

    // MARK: Links

    mutating func startLink(for key: [UInt8]) {
        guard let peer = peers[key] else { return }
        let id = LinkID(nextLinkID)
        nextLinkID += 1
        let initiator = configuration.identity.publicKey.lexicographicallyPrecedes(key)
        let link = Link(
            id: id, machine: PeerLink(isInitiator: initiator, now: now, timing: configuration.timing.link), now: now)
        peers[key]?.link = link
        linkOwners[id] = key
        log(.info, "link started", ["peer": peer.shortID, "link": "\(id.value)"])
        publish(ControlEvent(kind: .link, peer: peer.shortID, name: peer.name, state: link.machine.state.eventState))
        if recording { warnNotTold([key]) }
        if agent == .ready { requestPath(for: key) }
    }

    mutating func requestPath(for key: [UInt8]) {
        guard let peer = peers[key], let link = peer.link else { return }
        peers[key]?.link?.pathRequested = true
        output.append(
            .createPath(
                link.id, peer: peer.identity, protocolVersion: peer.version, epoch: peer.epoch,
                controlling: link.machine.isInitiator))
    }

    /// A signaling message from the peer for the link's current generation: carried out at once
    /// when the stream exists, held until it does otherwise (§6.6 step 4).
    mutating func remoteSignal(_ signal: RemoteSignal, for key: [UInt8]) {
        guard let link = peers[key]?.link else { return }
        guard link.pathCreated else {
            peers[key]?.link?.heldRemote.append(signal)
            return
        }
        apply(signal, to: link.id)
        if case .credentials = signal { feed(.remoteCredentials, toPeer: key) }
    }

    mutating func apply(_ signal: RemoteSignal, to id: LinkID) {
        switch signal {
        case .credentials(let credentials): output.append(.setRemoteCredentials(id, credentials))
        case .candidate(let line): output.append(.addRemoteCandidate(id, line: line))
        case .done: output.append(.remoteCandidatesDone(id))
        }
    }

    /// Our signaling for the link's current generation once more (§6.6 steps 4–5; duplicates are
    /// harmless: same-generation credentials and candidates change nothing at the peer).
    mutating func resendSignaling(to key: [UInt8]) {
        guard let peer = peers[key], let link = peer.link, let credentials = link.localCredentials else { return }
        log(.info, "re-sending ICE signaling", ["peer": peer.shortID, "generation": "\(link.generation)"])
        if link.generation > 0, link.machine.isInitiator { send(.iceRestart(generation: link.generation), to: key) }
        sendCredentials(credentials, generation: link.generation, to: key)
        for line in link.localCandidates { send(.iceCandidate(generation: link.generation, candidate: line), to: key) }
        if link.localDone { send(.iceCandidatesDone(generation: link.generation), to: key) }
    }

    mutating func sendCredentials(_ credentials: PathCredentials, generation: UInt32, to key: [UInt8]) {
        do {
            let message = try ParleyProtocol.ICECredentials(
                generation: generation, usernameFragment: credentials.ufrag, password: credentials.password)
            send(.iceCredentials(message), to: key)
        } catch {
            log(.warning, "local ICE credentials not sendable", ["error": "\(error)"])
        }
    }

    /// ICE restart at `generation` (§6.6 step 5), asked by us (`announce`) or following the peer.
    mutating func restartICE(of key: [UInt8], to generation: UInt32, announce: Bool, keepingOldPath: Bool? = nil) {
        guard let link = peers[key]?.link else { return }
        if announce { send(.iceRestart(generation: generation), to: key) }
        guard link.pathCreated else {
            // No stream yet (the agent is not ready): it starts at this generation.
            peers[key]?.link?.generation = generation
            peers[key]?.link?.heldRemote = []
            return
        }
        peers[key]?.link?.beginRestart(generation: generation)
        // A link that worked keeps its old path until the new one works (a burst of loss may end,
        // and then nothing was lost); one that never did or has failed has none worth keeping.
        let state = link.machine.state
        let keep = keepingOldPath ?? (link.relay == nil && (state == .up || state == .lost || state == .restarting))
        output.append(.restartPath(link.id, keepingOldPath: keep))
        log(.info, "ICE restart", ["peer": peers[key]?.shortID ?? "?", "generation": "\(generation)"])
    }

    /// The peer restarted ICE: the generation rule restarts ours at its generation, and the link
    /// state machine learns why its path changed.
    mutating func followRestart(of key: [UInt8], to generation: UInt32) {
        let relayed = peers[key]?.link?.relay != nil
        restartICE(of: key, to: generation, announce: false, keepingOldPath: relayed ? false : nil)
        // A link that works (directly, or through a member while the lead probes the direct
        // path) stays up while its paths are renewed.
        if peers[key]?.link?.machine.state != .up { feed(.restartBegan, toPeer: key) }
    }

    mutating func pathFact(_ fact: PathFact, on id: LinkID) {
        guard let key = linkOwners[id], let link = peers[key]?.link, link.id == id else { return }
        let shortID = peers[key]?.shortID ?? "?"
        switch fact {
        case .created(let credentials):
            peers[key]?.link?.pathCreated = true
            peers[key]?.link?.localCredentials = credentials
            sendCredentials(credentials, generation: link.generation, to: key)
            let held = link.heldRemote
            peers[key]?.link?.heldRemote = []
            for signal in held { remoteSignal(signal, for: key) }
        case .creationFailed(let reason):
            warn("cannot start a link to \(peers[key]?.name ?? shortID): \(reason)")
            endLink(of: key, reason: "no ICE stream: \(reason)", announce: false)
        case .restarted(let credentials):
            peers[key]?.link?.localCredentials = credentials
            sendCredentials(credentials, generation: link.generation, to: key)
        case .restartFailed(let reason):
            log(.warning, "ICE restart failed", ["peer": shortID, "error": reason])
        case .generationBegan:
            peers[key]?.link?.restartsInFlight = max(0, link.restartsInFlight - 1)
        case .localCandidate(let line, let ufrag):
            guard link.restartsInFlight == 0, ufrag == nil || ufrag == link.localCredentials?.ufrag else { return }
            peers[key]?.link?.localCandidates.append(line)
            send(.iceCandidate(generation: link.generation, candidate: line), to: key)
        case .localCandidatesDone:
            guard link.restartsInFlight == 0 else { return }
            peers[key]?.link?.localDone = true
            send(.iceCandidatesDone(generation: link.generation), to: key)
        case .selectedPair(let route):
            guard link.restartsInFlight == 0 else { return }
            if link.route != nil, link.route != route { peers[key]?.link?.routeChangedAt = now }
            peers[key]?.link?.route = route
            publish(
                ControlEvent(
                    kind: .link, peer: shortID, name: peers[key]?.name, state: link.machine.state.eventState,
                    route: route.kind))
        case .connected:
            guard link.restartsInFlight == 0 else { return }
            peers[key]?.link?.directConnected = true
            if link.relay != nil {
                // The direct path works again: back to it (the member stays the fallback).
                route(key, via: nil, why: "the direct path works again")
                if link.machine.state == .up { return }
            }
            feed(.pathReady, toPeer: key)
        case .failed(let why):
            guard link.restartsInFlight == 0 else { return }
            peers[key]?.link?.directConnected = false
            log(.info, "ICE failed", ["peer": shortID, "why": why])
            // While a member carries the link, a failed try of the direct path changes nothing.
            if link.relay == nil { feed(.pathFailed, toPeer: key) }
        }
    }

    mutating func sessionFact(_ fact: SessionFact, on id: LinkID) {
        guard let key = linkOwners[id], let link = peers[key]?.link, link.id == id else { return }
        let shortID = peers[key]?.shortID ?? "?"
        switch fact {
        case .established:
            peers[key]?.link?.established = true
            if peers[key]?.verified == false {
                peers[key]?.verified = true
                checkPin(key, pinning: true)
            }
            log(.info, "session established", ["peer": shortID])
            feed(.sessionEstablished, toPeer: key)
            sendReport(on: key, closesInterval: false)
            membersMayHaveChanged()
            chatSessionWorks(with: key)
        case .rekeyed:
            // After an ICE restart the lead re-keys over the new path: the session works there.
            peers[key]?.link?.established = true
            feed(.sessionEstablished, toPeer: key)
            chatSessionWorks(with: key)
        case .keysLost(let why):
            peers[key]?.link?.established = false
            log(.info, "session without keys", ["peer": shortID, "why": why])
            membersMayHaveChanged()
        case .authenticated(let via):
            peers[key]?.link?.authenticatedVia = via
            noteAuthenticated(from: key, via: via)
            feed(.packetReceived, toPeer: key)
        case .mediaPassedOn:
            feed(.mediaElsewhere, toPeer: key)
        case .stillAuthenticated(let at, let spacing):
            // Held by the driver until now, perhaps: the packet's own time says how live the link is.
            let at = min(at, now)
            noteAuthenticated(from: key, via: link.authenticatedVia, at: at)
            feed(.stillReceiving(spacing: spacing), toPeer: key, at: at)
        case .report(let report, let rtt, let mediaSent):
            let previous = link.peerReport
            peers[key]?.link?.peerReport = report
            noteSendRate(report, previous: previous, from: key)
            peers[key]?.link?.rttMs = rtt
            noteAuthenticated(from: key, via: link.authenticatedVia)
            feed(.packetReceived, toPeer: key)
            // §10.1: up once the peer reports that it receives our media — or, while we send none
            // (`sendsNoMedia`) and none was sent on this link yet, once it reports at all: a silent
            // participant has no audio to flow its way.
            if report.mediaReceived > 0 || (mediaSent == 0 && sendsNoMedia) { feed(.peerReceivesUs, toPeer: key) }
            updateEncoderLoss()
            peerRecording(report.recording, on: key)
        case .firstMedia:
            feed(.packetReceived, toPeer: key)
            sendReport(on: key, closesInterval: false)
        case .queueRising:
            if link.queueReportedAt.map({ now - $0 >= configuration.timing.queueReportSpacing }) ?? true {
                peers[key]?.link?.queueReportedAt = now
                sendReport(on: key, closesInterval: false)
            }
        case .leave:
            feed(.left, toPeer: key)
        case .links(let links):
            peers[key]?.links = links
            forgetOutdatedRefusals(by: key, links)
            fanOutStale = true
        case .relayRefused(let destination, let reason) where destination == RelayPacket.everyone:
            log(.info, "a member will not pass our voice on", ["member": shortID, "reason": "\(reason)"])
            peers[key]?.fanOutRefusedAt = now
            fanOutStale = true
        case .relayRefused(let destination, let reason):
            log(.info, "a member will not relay", ["member": shortID, "reason": "\(reason)"])
            peers[destination]?.link?.refusedBy[key] = (now, reason)
        case .meshEnvelope(let envelope):
            envelopeDelivered(envelope, from: nil)
        case .securityCode(let message):
            codeMessage(message, from: key)
        case .chat(let piece):
            chatReceived(piece, from: key)
        case .chatAck(let cumulative):
            chatAcknowledged(cumulative, by: key)
        case .recording(let value):
            peerRecording(value, on: key)
        }
    }

    /// No media flows from us: DTX holds it back, or there is no audio. Then, as §10.1 has it for a
    /// silent participant, REPORTs go to every link every 250 ms (they are all the peer gets, and
    /// it judges the link's liveness by them) and a link is up once the peer reports at all.
    var sendsNoMedia: Bool { paused || withoutAudio }

    mutating func audioFact(_ fact: AudioFact) {
        switch fact {
        case .failed(let reason):
            warn("audio device failed: \(reason); the meeting goes on without sound")
            losesAudio()
        case .unavailable(let reason):
            warn("audio unavailable in this meeting: \(reason); peers still connect, but you hear and send nothing")
            losesAudio()
        case .paused(let value, let noMediaSentOn):
            paused = value
            guard !withoutAudio else { return }
            // Media went to every link just now: the first REPORT in its place is due an
            // interval later.
            nextPausedReports = value ? now + configuration.timing.pausedReportInterval : nil
            guard value else { return }
            // §10.1: a silent participant's link is up once the peer reports at all. A peer that
            // reported before our pause began, on a link we had sent nothing on, counts now: its
            // next REPORT may be a second away (it talks), and would say the same.
            for key in peerOrder {
                guard let link = peers[key]?.link, link.peerReport != nil, noMediaSentOn.contains(link.id) else {
                    continue
                }
                feed(.peerReceivesUs, toPeer: key)
            }
        }
    }

    /// The audio engine is gone for this meeting: this node is a silent participant from now on
    /// (`sendsNoMedia`), with its REPORTs due at once.
    private mutating func losesAudio() {
        guard !withoutAudio else { return }
        withoutAudio = true
        if !paused { nextPausedReports = now }
    }

    /// Gives the peer's link state machine one fact and obeys what it returns.
    /// `at`: when the event happened, if before now (a packet whose fact was held).
    mutating func feed(_ event: PeerLink.Event, toPeer key: [UInt8], at: Instant? = nil) {
        guard let link = peers[key]?.link else { return }
        let before = link.machine.state
        guard let actions = peers[key]?.link?.machine.handle(event, at: at ?? now) else { return }
        if event == .pathReady, before != .signaling, before != .checking, peers[key]?.link?.established == true,
            !actions.contains(.startSession(rehandshake: true))
        {
            // Keys survive an ICE restart on the side that does not re-key (§6.6 step 5).
            _ = peers[key]?.link?.machine.handle(.sessionEstablished, at: now)
        }
        reportStateChange(of: key, from: before)
        for action in actions {
            switch action {
            case .startSession(let rehandshake):
                if rehandshake { peers[key]?.link?.established = false }
                output.append(.startSession(link.id, rehandshake: rehandshake))
            case .restartICE:
                restartICE(of: key, to: link.generation + 1, announce: true)
            case .remove:
                forget(key, reason: peers[key]?.link?.machine.reason ?? "gone")
            }
        }
    }

    mutating func reportStateChange(of key: [UInt8], from before: PeerLink.State) {
        guard let peer = peers[key], let link = peer.link, link.machine.state != before else { return }
        meshChanged = true
        let state = link.machine.state
        log(.info, "link state", ["peer": peer.shortID, "state": "\(state)", "why": link.machine.reason ?? "-"])
        // A link that is gone is announced once, with why, as it is removed (`endLink`).
        if state != .gone {
            publish(
                ControlEvent(
                    kind: .link, peer: peer.shortID, name: peer.name, state: state.eventState, route: link.route?.kind,
                    message: link.machine.reason))
        }
        if state == .lost {
            // Also probe our rendezvous connection: if our own network changed, sending finds the
            // dead connection at once (a reset) instead of at the next ping (15 s), so the
            // restart's signaling can flow. A unicast HELLO with our epoch changes nothing at the
            // peer but its record of our member id (§6.6 step 2).
            send(hello(), to: key)
        }
        if state == .up || before == .up { updateEncoderLoss() }
    }

    /// Ends a peer's link (its record stays: its identity, name and epoch).
    mutating func endLink(of key: [UInt8], reason: String, announce: Bool = true) {
        guard let peer = peers[key], let link = peer.link else { return }
        peers[key]?.link = nil
        linkOwners[link.id] = nil
        sendRate?.forget(key)
        output.append(.removePath(link.id))
        log(.info, "link ended", ["peer": peer.shortID, "why": reason])
        if link.peerRecording {
            publish(
                ControlEvent(
                    kind: .recording, peer: peer.shortID, name: peer.name, state: .recordingStopped,
                    message: "link ended"))
        }
        if announce {
            publish(ControlEvent(kind: .link, peer: peer.shortID, name: peer.name, state: .gone))
            publish(ControlEvent(kind: .peerLeft, peer: peer.shortID, name: peer.name, message: reason))
        }
        if link.established {
            membersMayHaveChanged()
        }
        updateEncoderLoss()
    }

    // MARK: Timers

    mutating func runTimers() {
        if meshChanged {
            meshChanged = false
            chooseRoutes()
            probeDirectPaths()
            shareLinks()
            fanOutStale = true
        }
        if fanOutStale { chooseFanOut() }
        stepFanOutProbe()
        // The links with something due (usually none), in link order. While we send no media
        // (`sendsNoMedia`), REPORTs go to every link together every 250 ms, and one due to close
        // its link's interval waits for them (the interval is ours; the peer gets a REPORT every
        // 250 ms regardless): one wake-up and one REPORT per link each time, instead of each
        // link's own schedule.
        let pausedReports = sendsNoMedia && now >= (nextPausedReports ?? now)
        if pausedReports { nextPausedReports = now + configuration.timing.pausedReportInterval }
        var due: [(LinkID, [UInt8])] = []
        for (key, peer) in peers {
            guard let link = peer.link else { continue }
            let timerDue = link.machine.nextDeadline.map { now >= $0 } ?? false
            let reportDue = link.established && (sendsNoMedia ? pausedReports : now >= link.nextReport)
            if timerDue || reportDue { due.append((link.id, key)) }
        }
        due.sort { $0.0 < $1.0 }
        for (_, key) in due {
            guard let link = peers[key]?.link else { continue }
            if let deadline = link.machine.nextDeadline, now >= deadline { feed(.tick, toPeer: key) }
            guard let link = peers[key]?.link, link.established else { continue }
            if sendsNoMedia ? pausedReports : now >= link.nextReport {
                sendReport(on: key, closesInterval: now >= link.nextReport)
            }
        }
        runChatTimers()
        for peer in notConnectedPeers where !peer.reportedNotConnected {
            peers[peer.identity.identityKey]?.reportedNotConnected = true
            log(.warning, "present but not connected", ["peer": peer.shortID])
            publish(
                ControlEvent(
                    kind: .warning, peer: peer.shortID, name: peer.name,
                    message: "someone with the invite is present but has not connected: \(peer.name) (\(peer.shortID))")
            )
        }
        if let due = codeViewDue, now >= due {
            codeViewDue = nil
            sendCodeMessages(codeAgreement.viewChanged(peers: codeMembers()))
        }
    }

    /// REPORT (§10.1), every 1000 ms ± 10 % while the session has keys, every 250 ms to all
    /// links together while we send no media (`sendsNoMedia`), and at once when the session is
    /// established or the link's first media arrives.
    mutating func sendReport(on key: [UInt8], closesInterval: Bool) {
        guard let link = peers[key]?.link, link.established else { return }
        var closes = closesInterval
        if now >= link.nextReport {
            closes = true
            let jitter = configuration.timing.reportJitter
            let spread = Int64(jitter.components.seconds * 1000 + jitter.components.attoseconds / 1_000_000_000_000_000)
            let offset = spread > 0 ? Int64.random(in: -spread...spread, using: &random) : 0
            let next = now + configuration.timing.reportInterval + .milliseconds(offset)
            peers[key]?.link?.nextReport = next
        }
        let version = peers[key]?.version ?? 1
        output.append(
            .sendReport(
                link.id, closesInterval: closes, muted: muted,
                recording: recording && version >= MeetingCore.recordingVersion))
        repeatLinks(on: key)
        // Until the code is agreed, the current COMMIT or REVEAL goes with every REPORT (§11.1).
        if let message = codeAgreement.repeated(to: key) {
            output.append(.sendControl(link.id, .securityCode(message)))
        }
    }

    /// The loss the encoder protects against (§9.3): the worst latest REPORT of a peer whose link
    /// is up (a lost or restarting link's last word is stale). A peer that has not yet seen a
    /// second of our media has measured nothing; its link counts as slightly lossy, so the first
    /// words of a call (or of a participant silent until now) go out with one copy.
    mutating func updateEncoderLoss() {
        var worst = 0.0
        // A congested link's loss is answered with a lower rate (`noteSendRate`): copies would add to it.
        let congested = sendRate?.congested(at: now) ?? []
        for (key, peer) in peers where !congested.contains(key) {
            guard let link = peer.link, link.machine.state == .up, let report = link.peerReport else { continue }
            worst = max(worst, Self.measuredLoss(report) ?? Self.unmeasuredLoss)
        }
        guard worst != encoderLoss else { return }
        encoderLoss = worst
        output.append(.setEncoderLoss(worst))
    }

    /// Feeds a peer's REPORT to the bandwidth estimate and tells the engine when it moves.
    mutating func noteSendRate(
        _ report: SessionControl.Report, previous: SessionControl.Report?, from key: [UInt8]
    ) {
        guard var rate = sendRate, let link = peers[key]?.link else { return }
        let settled = link.routeChangedAt.map { now - $0 >= SendRate.routeSettle } ?? true
        let mediaFlowed = report.mediaExpected != previous?.mediaExpected
        let changed = rate.report(
            from: key, queueDelayMs: settled ? report.queueDelayMs : nil,
            loss: Self.measuredLoss(report), mediaFlowed: mediaFlowed, at: now)
        sendRate = rate
        judgeFanOutProbe(report, from: key, mediaFlowed: mediaFlowed)
        // Our own uplink, not one peer's downlink, is what one copy up helps: it fills for every
        // link at once, so most of them say "over" together.
        let congested = rate.congested(at: now).count
        if congested >= 2, congested * 2 >= upPeerCount { uplinkCongestedAt = now }
        guard changed else { return }
        fanOutStale = true
        output.append(.setSendRate(rate.limited ? rate.estimate : nil))
        log(
            .debug, "send rate",
            [
                "peer": peers[key]?.shortID ?? "?", "per_peer_bps": "\(rate.estimate)",
                "queue_ms": report.queueDelayMs.map { "\($0)" } ?? "-", "loss_permille": "\(report.lossPermille)",
            ])
    }

    /// The loss a peer's REPORT gives for our media, nil until it has seen `measuredAfter` payloads.
    static func measuredLoss(_ report: SessionControl.Report) -> Double? {
        report.mediaExpected < measuredAfter ? nil : Double(report.lossPermille) / 1000
    }

    static let measuredAfter: UInt32 = 50
    static let unmeasuredLoss = 0.02

    // MARK: Leaving

    /// LEAVE over every session (heard even without the rendezvous), BYE through the rendezvous.
    mutating func leave() {
        for key in peers.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            if let link = peers[key]?.link, link.established { output.append(.sendControl(link.id, .leave)) }
        }
        if rendezvous == .connected { send(.bye, to: nil) }
        log(.info, "left the meeting")
        end(failure: nil)
    }

    mutating func end(failure: String?) {
        guard !ended else { return }
        ended = true
        for key in peers.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            if let link = peers[key]?.link { output.append(.removePath(link.id)) }
            peers[key]?.link = nil
        }
        linkOwners = [:]
        publish(ControlEvent(kind: .meeting, state: failure == nil ? .left : .failed, message: failure))
        output.append(.end(failure: failure))
    }

    // MARK: Output helpers

    mutating func publish(_ event: ControlEvent) { output.append(.publish(event)) }

    mutating func log(_ level: MeetingLog.Level, _ message: String, _ metadata: [String: String] = [:]) {
        output.append(.log(MeetingLog(level, message, metadata)))
    }

    mutating func warn(_ message: String) {
        log(.warning, message)
        publish(ControlEvent(kind: .warning, message: message))
    }

    // MARK: Security code (§11)

    /// The member set may have changed (a session gained or lost its keys, a peer renamed).
    mutating func membersMayHaveChanged() {
        codeViewDue = now + configuration.timing.securityCodeSettle
    }

    /// The members the code covers besides this node: every peer with an established session.
    func codeMembers() -> [CodeMember] {
        sortedPeerKeys.compactMap { key in
            guard let peer = peers[key], peer.link?.established == true else { return nil }
            return CodeMember(identityKey: key, name: peer.name)
        }
    }

    /// A COMMIT or REVEAL from a peer.
    mutating func codeMessage(_ message: SecurityCodeMessage, from key: [UInt8]) {
        sendCodeMessages(codeAgreement.received(message, from: key))
    }

    /// Sends the agreement's messages over the peers' sessions, and announces a new code.
    mutating func sendCodeMessages(_ outgoing: [SecurityCodeAgreement.Outgoing]) {
        for message in outgoing {
            guard let link = peers[message.peer]?.link, link.established else { continue }
            output.append(.sendControl(link.id, .securityCode(message.message)))
        }
        if let code = codeAgreement.code, code != publishedCode {
            publishedCode = code
            publish(ControlEvent(kind: .securityCode, message: code.description))
        }
    }
}

/// A signaling message from the peer that needs the link's stream.
enum RemoteSignal: Sendable, Hashable {
    case credentials(PathCredentials)
    case candidate(String)
    case done
}
