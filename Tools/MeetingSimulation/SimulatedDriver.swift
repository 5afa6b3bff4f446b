import ControlAPI
public import MeetingCore
import ParleyCore
import ParleyProtocol
import RendezvousWire

/// How the simulation drives each core: what the daemon's `MeetingDriver` does with the real
/// rendezvous client, ICE agent and sessions, done here with the simulated ones.
extension MeetingSimulation {
    func handle(_ event: Event) {
        wallClock.advance(
            to: 1_800_000_000_000_000_000 + UInt64((now - start).components.seconds) * 1_000_000_000
                + UInt64((now - start).components.attoseconds / 1_000_000_000))
        if let target = event.node, nodes[target.index].phase == .frozen, event.waitsForAFrozenNode {
            nodes[target.index].inbox.append(event)
            return
        }
        switch event {
        case .join(let id):
            let node = nodes[id.index]
            guard node.phase == .idle else { return }
            node.phase = .running
            node.joined = true
            feed(id, .start)
            updatePause(id)
            schedule(.admit(id), after: world.rendezvousLatency * 2)
            schedule(.media(id), after: world.mediaInterval)
        case .input(let id, let input):
            feed(id, input)
        case .wake(let id):
            wake(id)
        case .datagram(let to, let from, let address, let bytes):
            receive(bytes, at: to, from: from, senderAddress: address)
        case .deliver(let to, let member, let payload, let connection):
            guard rendezvous.members[to]?.connection == connection else { return }
            feed(to, .rendezvousDelivered(from: member, payload: payload))
        case .admit(let id):
            admit(id)
        case .memberLeft(let id, let connection):
            dropMember(id, connection: connection)
        case .iceCheck(let id, let link, let generation):
            check(id, link, generation: generation)
        case .iceFail(let id, let link, let generation):
            let node = nodes[id.index]
            guard let path = node.paths[link], path.generation == generation, path.connectedGeneration != generation
            else { return }
            feed(id, .path(link, .failed("no working path (simulated)")))
        case .pathEvent(let id, let link, let generation, let fact):
            guard let path = nodes[id.index].paths[link], path.generation == generation else { return }
            feed(id, .path(link, fact))
        case .media(let id):
            sendMedia(id)
        case .talking(let id, let talking):
            nodes[id.index].talking = talking
            updatePause(id)
        case .crash(let id):
            let node = nodes[id.index]
            guard node.phase == .running || node.phase == .frozen else { return }
            node.phase = .crashed
            node.removeAllPaths()
            if let connection = rendezvous.members[id]?.connection {
                schedule(.memberLeft(id, connection: connection), after: world.rendezvousLatency)
            }
        case .freeze(let id):
            guard nodes[id.index].phase == .running else { return }
            nodes[id.index].phase = .frozen
            if let connection = rendezvous.members[id]?.connection {
                schedule(.memberLeft(id, connection: connection), after: world.rendezvousIdleTimeout)
            }
        case .thaw(let id):
            thaw(id)
        case .rendezvousDown:
            rendezvous.up = false
            for id in rendezvous.members.keys.sorted() {
                rendezvous.members[id] = nil
                schedule(.input(id, .rendezvousDisconnected(reason: "connection lost")), after: world.rendezvousLatency)
            }
        case .rendezvousUp:
            rendezvous.up = true
            for node in nodes where node.joined && (node.phase == .running || node.phase == .frozen) {
                reconnect(node.id)
            }
        }
    }

    // MARK: The user's chat (`parley say`)

    /// The node sends a chat message now; the outcome as the daemon answers `parley say`.
    @discardableResult
    public func say(_ id: NodeID, _ text: String) -> Result<ChatDelivery, ChatRefusal> {
        let node = nodes[id.index]
        guard node.phase == .running else { return .failure(.notInMeeting) }
        let (outcome, commands) = node.core.say(text, at: now)
        execute(id, commands)
        scheduleWake(id)
        return outcome
    }

    /// The node's chat log (`parley chat`), oldest first.
    public func chat(of id: NodeID) -> [ChatEntry] { nodes[id.index].core.chat }

    // MARK: Feeding the core

    /// Hands `input` to the node's core, as the daemon's driver does: `.stillAuthenticated` is
    /// held until the core's next other input and handed over just before it.
    func feed(_ id: NodeID, _ input: MeetingInput) {
        let node = nodes[id.index]
        guard node.phase == .running else { return }
        if case .session(let link, .stillAuthenticated) = input {
            node.heldLiveness[link] = input
            return
        }
        node.ownInputs += 1
        let held = node.heldLiveness.sorted { $0.key < $1.key }
        node.heldLiveness = [:]
        for (_, fact) in held { handle(id, fact) }
        handle(id, input)
        scheduleWake(id)
    }

    private func handle(_ id: NodeID, _ input: MeetingInput) {
        counters["inputs", default: 0] += 1
        execute(id, nodes[id.index].core.handle(input, at: now))
    }

    private func execute(_ id: NodeID, _ commands: [MeetingCommand]) {
        for command in commands {
            for answer in carryOut(id, command) { feed(id, answer) }
        }
    }

    private func carryOut(_ id: NodeID, _ command: MeetingCommand) -> [MeetingInput] {
        let node = nodes[id.index]
        node.commandCounts[command.kind, default: 0] += 1
        switch command {
        case .sendEnvelope(let envelope, let recipient):
            counters["envelopes", default: 0] += 1
            relay(envelope, from: id, to: recipient)
        case .createICEAgent:
            schedule(.input(id, .iceAgentReady), after: .milliseconds(1))
        case .createPath(let link, let peer, let version, let epoch, _):
            let session = PeerSession(
                local: node.identity, peer: peer, keys: node.core.configuration.keys, protocolVersion: version,
                wallClock: wallClock.clock)
            let path = Path(
                peerKey: peer.identityKey,
                link: LinkSession(
                    session: session, timing: world.timing,
                    fanOutVerifier: node.fanOutVerifiers.verifier(
                        for: peer.identityKey, epoch: epoch, roomID: node.core.configuration.keys.roomID)),
                localCredentials: newCredentials())
            node.add(path, as: link)
            announceCandidates(id, link)
            return [.path(link, .created(path.localCredentials))]
        case .setRemoteCredentials(let link, let credentials):
            guard node.paths[link] != nil else { break }
            node.paths[link]?.remoteCredentials = credentials
            schedule(.iceCheck(id, link, generation: node.paths[link]!.generation), after: .milliseconds(1))
        case .addRemoteCandidate(let link, let line):
            guard node.paths[link] != nil, let address = Self.address(in: line) else { break }
            node.paths[link]?.remoteAddresses.insert(address.generation)
            schedule(.iceCheck(id, link, generation: node.paths[link]!.generation), after: .milliseconds(1))
        case .remoteCandidatesDone(let link):
            guard node.paths[link] != nil else { break }
            node.paths[link]?.remoteDone = true
            schedule(.iceCheck(id, link, generation: node.paths[link]!.generation), after: .milliseconds(1))
        case .restartPath(let link, let keepingOldPath):
            guard let path = node.paths[link] else { break }
            path.generation += 1
            path.localCredentials = newCredentials()
            path.remoteCredentials = nil
            path.remoteAddresses = []
            path.remoteDone = false
            path.failScheduled = false
            path.connectedGeneration = nil
            if !keepingOldPath { path.connection = nil }
            schedule(.pathEvent(id, link, generation: path.generation, .generationBegan))
            announceCandidates(id, link)
            return [.path(link, .restarted(path.localCredentials))]
        case .removePath(let link):
            node.removePath(link)
        case .startSession(let link, let rehandshake):
            guard let path = node.paths[link] else { break }
            let held = path.held
            path.held = []
            send(held, from: id, on: link)
            let output = path.link.start(now: now, rehandshake: rehandshake)
            return deliver(output, at: id, on: link)
        case .sendReport(let link, let closesInterval, let muted, let recording):
            guard let counts = node.paths[link]?.counts else { break }
            if closesInterval { node.paths[link]?.meter.closeInterval(counts, at: now) }
            let reception = LinkSession.Reception(
                expected: counts.expected, jitterMicroseconds: 0, lossPermille: node.paths[link]!.meter.lossPermille,
                queueDelay: .nanoseconds(Int64(node.paths[link]!.queueDelay.value)))
            let report = node.paths[link]!.link.report(
                nowMs: Self.milliseconds(now - start), reception: reception, muted: muted, recording: recording)
            sendControl(.report(report), from: id, on: link)
        case .sendControl(let link, let message):
            sendControl(message, from: id, on: link)
        case .sendMeshEnvelope(let envelope, let link, let forwardTo):
            let packet =
                forwardTo.map { RelayPacket(kind: .forwardEnvelope, peer: $0, payload: envelope) }
                ?? RelayPacket(kind: .deliverEnvelope, peer: node.identity.publicKey, payload: envelope)
            sendRelay(packet, from: id, on: link)
        case .setRoute(let link, let via):
            node.paths[link]?.relayVia = via
        case .setRelayPolicy(let policy):
            node.relayTable.update(policy)
        case .setMuted(let muted):
            node.muted = muted
            updatePause(id)
        case .setEncoderLoss(let loss):
            node.encoderLoss = loss
        case .setSendRate(let bitsPerSecond):
            node.sendRate = bitsPerSecond
        case .setFanOut(let route):
            node.fanOut = route
        case .publish(let event):
            node.events.append(event)
        case .log(let line):
            node.logs.append(line)
        case .savePins, .admitted:
            break
        case .end(let failure):
            node.phase = .ended
            node.failure = failure
            node.removeAllPaths()
            if let connection = rendezvous.members[id]?.connection {
                // After the BYE that went out just before.
                schedule(.memberLeft(id, connection: connection), after: world.rendezvousLatency * 2 + .milliseconds(1))
            }
        }
        return []
    }

    private func deliver(_ output: LinkSession.Output, at id: NodeID, on link: LinkID) -> [MeetingInput] {
        send(output.datagrams, from: id, on: link)
        return output.facts.map { .session(link, $0) }
    }

    // MARK: Timers

    private func scheduleWake(_ id: NodeID) {
        let node = nodes[id.index]
        guard node.phase == .running else { return }
        var deadline = node.core.nextDeadline
        for path in node.paths.values {
            if let due = path.link.nextDeadline { deadline = deadline.map { min($0, due) } ?? due }
        }
        guard let deadline else { return }
        if let scheduled = node.scheduledWake, scheduled <= deadline, scheduled >= now { return }
        node.scheduledWake = deadline
        schedule(.wake(id), at: deadline)
    }

    private func wake(_ id: NodeID) {
        let node = nodes[id.index]
        guard node.phase == .running else { return }
        if let scheduled = node.scheduledWake, scheduled > now { return }  // superseded by a later one
        node.scheduledWake = nil
        // A deadline that a tick does not move would wake the node forever at one instant (the
        // daemon would spin): fail loudly instead of hanging.
        if node.lastWake == now {
            node.wakesAtOneInstant += 1
            if node.wakesAtOneInstant >= 1000 {
                let sessions = node.paths.map {
                    "\($0.key): \(String(describing: $0.value.link.nextDeadline.map { $0 - start }))"
                }
                preconditionFailure(
                    "\(node.name) keeps waking at \(now - start): a deadline that never moves (core: "
                        + "\(String(describing: node.core.nextDeadline.map { $0 - start })), sessions: \(sessions))")
            }
        } else {
            node.lastWake = now
            node.wakesAtOneInstant = 0
        }
        for link in node.paths.keys.sorted() {
            guard let path = node.paths[link], let due = path.link.nextDeadline, due <= now else { continue }
            let output = path.link.tick(now: now)
            for fact in deliver(output, at: id, on: link) { feed(id, fact) }
        }
        feed(id, .tick)
    }

    // MARK: Media and the session's datagrams

    private func updatePause(_ id: NodeID) {
        let node = nodes[id.index]
        let paused = node.muted || !node.talking
        guard paused != node.paused, node.phase == .running else { return }
        node.paused = paused
        let noMediaSent = node.paths.filter { $0.value.link.mediaSent == 0 }.keys
        feed(id, .audio(.paused(paused, noMediaSentOn: Set(noMediaSent))))
    }

    private func sendMedia(_ id: NodeID) {
        let node = nodes[id.index]
        guard node.phase == .running else { return }
        schedule(.media(id), after: world.mediaInterval)
        guard !node.paused else { return }
        // The sequence number, and the send time for the receiver's queueing delay (§10.1).
        let sentAt = UInt64((now - start).nanoseconds)
        let body: [UInt8] =
            withUnsafeBytes(of: node.nextSequence.bigEndian, Array.init)
            + withUnsafeBytes(of: sentAt.bigEndian, Array.init)
        node.nextSequence &+= 1
        // On the wire a media packet is as large as the encoder makes it for the rate the core
        // allows (at most the configured encoding's).
        let rate = node.sendRate ?? node.options.sendRateRange?.upperBound ?? 60_400
        let wireBits = Int(Double(rate) * world.mediaInterval.seconds)
        let fanOut = node.fanOut.flatMap { node.paths[$0.via] == nil ? nil : $0 }
        // The member's copy first, then the others in turn, as the node sends them (`MediaFanout`).
        let links = node.paths.keys.sorted().filter { !(fanOut?.passedOn.contains($0) ?? false) }
        var order = links.filter { $0 == fanOut?.via }
        node.copyOrder.forEach(links.filter { $0 != fanOut?.via }) { order.append($0) }
        for link in order {
            var packet: [UInt8] = []
            if link == fanOut?.via {
                // One signed copy for the member to play and pass on (§15.2), as large as the
                // encoding fitted with the signature's bytes.
                if node.signer == nil {
                    node.signer = FanOutSigner(
                        identity: node.identity, roomID: node.core.configuration.keys.roomID,
                        epoch: node.core.configuration.hello.sessionEpoch)
                }
                var frame: [UInt8] = []
                body.withUnsafeBytes { node.signer!.sign($0, into: &frame) }
                guard node.paths[link]?.link.seal(.fanOut, body: frame, now: now, into: &packet) == true else {
                    continue
                }
            } else {
                guard node.paths[link]?.link.seal(.media, body: body, now: now, into: &packet) == true else { continue }
            }
            // Unlimited, the encoder sends its full rate and the signature on top.
            let extra = link == fanOut?.via && node.sendRate == nil ? MeetingCore.fanOutPacketExtra * 8 : 0
            transmit(packet, from: id, on: link, holding: false, wireBits: wireBits + extra)
        }
    }

    private func sendControl(_ message: SessionControl, from id: NodeID, on link: LinkID) {
        let node = nodes[id.index]
        var packet: [UInt8] = []
        guard node.paths[link]?.link.seal(.sessionControl, body: message.encoded(), now: now, into: &packet) == true
        else { return }
        transmit(packet, from: id, on: link, holding: false)
    }

    private func send(_ datagrams: [[UInt8]], from id: NodeID, on link: LinkID) {
        for datagram in datagrams { transmit(datagram, from: id, on: link, holding: true) }
    }

    /// Seals a relay packet (§13.2) on a link and sends it.
    @discardableResult
    private func sendRelay(_ relayed: RelayPacket, from id: NodeID, on link: LinkID) -> Bool {
        let node = nodes[id.index]
        var packet: [UInt8] = []
        guard node.paths[link]?.link.seal(relayed, now: now, into: &packet) == true else { return false }
        transmit(packet, from: id, on: link, holding: false)
        return true
    }

    /// Puts one datagram on the link's path — its direct path, or through the member it is routed
    /// via (§13.2); one that cannot go yet is held (session datagrams, as the daemon's transport
    /// holds them until the path is up).
    private func transmit(
        _ datagram: [UInt8], from id: NodeID, on link: LinkID, holding: Bool, wireBits: Int? = nil
    ) {
        let node = nodes[id.index]
        if let via = node.paths[link]?.relayVia, let path = node.paths[link] {
            if via != link, node.paths[via]?.relayVia == nil {
                sendRelay(RelayPacket(kind: .forward, peer: path.peerKey, payload: datagram), from: id, on: via)
            }
            return
        }
        guard let connection = node.paths[link]?.connection else {
            if holding {
                node.paths[link]?.held.append(datagram)
                if (node.paths[link]?.held.count ?? 0) > 4 { node.paths[link]?.held.removeFirst() }
            }
            return
        }
        node.paths[link]?.bytesSent += UInt64(datagram.count)
        let peer = nodes[connection.peer.index]
        guard connection.localAddress == node.addressGeneration, connection.peerAddress == peer.addressGeneration,
            !network.blocked.contains(Network.Pair(id, connection.peer))
        else { return }
        if let loss = network.loss[[id, connection.peer]], loss > 0, random.nextUnit() < loss { return }
        var wait = Duration.zero
        if var uplink = network.uplinks[id] {
            // IPv4 and UDP headers on top of the datagram, unless the caller says what it weighs.
            let bits = wireBits ?? (datagram.count + 28) * 8
            let departure =
                max(now, uplink.freeAt) + .nanoseconds(Int64(bits) * 1_000_000_000 / Int64(uplink.bitsPerSecond))
            if departure - now > uplink.queue {
                uplink.dropped += 1
                network.uplinks[id] = uplink
                return
            }
            uplink.freeAt = departure
            wait = departure - now
            uplink.waits.append((now, wait))
            network.uplinks[id] = uplink
        }
        if var downlink = network.downlinks[connection.peer] {
            let bits = wireBits ?? (datagram.count + 28) * 8
            let arrival = now + wait + world.latency
            let departure =
                max(arrival, downlink.freeAt)
                + .nanoseconds(Int64(bits) * 1_000_000_000 / Int64(downlink.bitsPerSecond))
            if departure - arrival > downlink.queue {
                downlink.dropped += 1
                network.downlinks[connection.peer] = downlink
                return
            }
            downlink.freeAt = departure
            downlink.waits.append((arrival, departure - arrival))
            network.downlinks[connection.peer] = downlink
            wait += departure - arrival
        }
        schedule(
            .datagram(to: connection.peer, from: id, senderAddress: connection.localAddress, bytes: datagram),
            after: world.latency + wait)
    }

    private func receive(_ datagram: [UInt8], at id: NodeID, from sender: NodeID, senderAddress: Int) {
        let node = nodes[id.index]
        guard node.phase == .running, let link = node.pathID(toward: nodes[sender.index].identity.publicKey),
            let path = node.paths[link], let connection = path.connection, connection.peer == sender,
            connection.peerAddress == senderAddress
        else { return }
        node.paths[link]?.bytesReceived += UInt64(datagram.count)
        counters["datagrams", default: 0] += 1
        if datagram.first == 1 { counters["initiations", default: 0] += 1 }
        receiveSession(datagram, at: id, on: link, via: nil)
    }

    /// One datagram of the session on `link`, straight off its path or carried by member `via`.
    private func receiveSession(_ datagram: [UInt8], at id: NodeID, on link: LinkID, via: [UInt8]?) {
        let node = nodes[id.index]
        guard let path = node.paths[link],
            let output = node.paths[link]?.link.receive(
                datagram, now: now, nowMs: Self.milliseconds(now - start), via: via)
        else { return }
        play(output, at: id, on: link)
        if let frame = output.fanOut { fanOut(frame, at: id, from: path.peerKey, on: link) }
        if let relayed = output.relay { relay(relayed, at: id, from: path.peerKey, on: link) }
    }

    /// What a session step gave: its media counted as the audio channel would, its facts fed.
    private func play(_ output: LinkSession.Output, at id: NodeID, on link: LinkID) {
        let node = nodes[id.index]
        if let media = output.media, media.count == 12, let path = node.paths[link] {
            let sequence = media.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let sentAt = media.suffix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let arrival = Int64((now - start).nanoseconds)
            if path.queueDelay.note(transit: arrival - Int64(sentAt), now: arrival) == true {
                feed(id, .session(link, .queueRising))
            }
            // A frame that came both ways (while §15's routes change) is one frame.
            let fresh = path.recentSequences.insert(sequence).inserted
            if path.recentSequences.count > 256 {
                path.recentSequences = path.recentSequences.filter { $0 + 128 > sequence }
            }
            if path.firstSequence == nil { path.firstSequence = sequence }
            path.highestSequence = max(path.highestSequence, sequence)
            if fresh {
                path.mediaReceived += 1
                path.lastMediaAt = now
                node.mediaArrivals[path.peerKey, default: []].append(now)
            }
        }
        for fact in deliver(output, at: id, on: link) { feed(id, fact) }
    }

    /// What the daemon's RelayRouter does with a frame `source` asked this node to pass on (§15.2).
    private func fanOut(_ frame: ArraySlice<UInt8>, at id: NodeID, from source: [UInt8], on origin: LinkID) {
        let node = nodes[id.index]
        switch node.relayTable.decideFanOut(from: source, at: now) {
        case .forward(let targets):
            counters["fanned", default: 0] += targets.count
            for key in targets {
                guard let target = node.pathID(toward: key) else { continue }
                sendRelay(RelayPacket(kind: .fanDeliver, peer: source, payload: Array(frame)), from: id, on: target)
            }
        case .refuse(let reason, let tell):
            if tell {
                sendControl(.relayRefused(destination: RelayPacket.everyone, reason: reason), from: id, on: origin)
            }
        }
    }

    /// What the daemon's RelayRouter does with a relay packet from `source` (§13.2).
    private func relay(_ packet: RelayPacket, at id: NodeID, from source: [UInt8], on origin: LinkID) {
        let node = nodes[id.index]
        counters["relayed", default: 0] += 1
        switch packet.kind {
        case .forward:
            switch node.relayTable.decide(from: source, to: packet.peer, at: now) {
            case .forward:
                guard let target = node.pathID(toward: packet.peer) else { return }
                sendRelay(RelayPacket(kind: .deliver, peer: source, payload: packet.payload), from: id, on: target)
            case .refuse(let reason, let tell):
                if tell { sendControl(.relayRefused(destination: packet.peer, reason: reason), from: id, on: origin) }
            }
        case .deliver:
            guard let target = node.pathID(toward: packet.peer) else { return }
            receiveSession(packet.payload, at: id, on: target, via: source)
        case .forwardEnvelope:
            guard node.relayTable.acceptEnvelope(from: source, at: now) else { return }
            let linked = node.relayTable.policy.linked
            let targets =
                packet.peer == RelayPacket.everyone
                ? linked.filter { $0 != source }.sorted { $0.lexicographicallyPrecedes($1) }
                : (linked.contains(packet.peer) ? [packet.peer] : [])
            for key in targets {
                guard let target = node.pathID(toward: key) else { continue }
                sendRelay(
                    RelayPacket(kind: .deliverEnvelope, peer: source, payload: packet.payload), from: id, on: target)
            }
        case .deliverEnvelope:
            break
        case .fanDeliver:
            guard packet.peer != source, node.relayTable.acceptFanDelivery(from: source, at: now),
                let target = node.pathID(toward: packet.peer), let path = node.paths[target]
            else { return }
            play(path.link.receiveFanned(packet.payload[...], now: now), at: id, on: target)
        }
    }

    // MARK: ICE (a model)

    private func newCredentials() -> PathCredentials {
        let characters = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        func word(_ count: Int) -> String {
            String((0..<count).map { _ in characters[Int.random(in: 0..<characters.count, using: &random)] })
        }
        return PathCredentials(ufrag: word(8), password: word(24))
    }

    /// The node's host candidate for its current address, then end-of-candidates.
    private func announceCandidates(_ id: NodeID, _ link: LinkID) {
        let node = nodes[id.index]
        guard let path = node.paths[link] else { return }
        let line = "candidate:1 1 UDP 2130706431 10.\(id.index).\(node.addressGeneration).1 5000 typ host"
        schedule(
            .pathEvent(
                id, link, generation: path.generation, .localCandidate(line: line, ufrag: path.localCredentials.ufrag)),
            after: .milliseconds(1))
        schedule(.pathEvent(id, link, generation: path.generation, .localCandidatesDone), after: .milliseconds(2))
    }

    /// The node and address generation a simulated candidate line names.
    static func address(in line: String) -> (node: Int, generation: Int)? {
        let fields = line.split(separator: " ")
        guard fields.count > 4 else { return nil }
        let octets = fields[4].split(separator: ".").compactMap { Int($0) }
        guard octets.count == 4 else { return nil }
        return (octets[1], octets[2])
    }

    /// Connectivity checks of one side's current generation: when both ends know each other's
    /// credentials and current address and the network lets them through, both get a working
    /// pair after a round trip; when every candidate is in and none can work, ICE fails.
    private func check(_ id: NodeID, _ link: LinkID, generation: Int) {
        let node = nodes[id.index]
        guard node.phase == .running, let path = node.paths[link], path.generation == generation,
            path.connectedGeneration != generation,
            let peer = nodes.first(where: { $0.identity.publicKey == path.peerKey }),
            let peerLink = peer.pathID(toward: node.identity.publicKey), let peerPath = peer.paths[peerLink]
        else { return }
        let know =
            path.remoteCredentials == peerPath.localCredentials && peerPath.remoteCredentials == path.localCredentials
            && path.remoteAddresses.contains(peer.addressGeneration)
            && peerPath.remoteAddresses.contains(node.addressGeneration)
        let bothSymmetric = node.options.nat == .symmetric && peer.options.nat == .symmetric
        let relayed = bothSymmetric && (node.options.turn || peer.options.turn)
        let reachable =
            peer.phase == .running && !network.blocked.contains(Network.Pair(id, peer.id))
            && (!bothSymmetric || relayed)
        if know, reachable {
            let mine = Connection(
                peer: peer.id, localAddress: node.addressGeneration, peerAddress: peer.addressGeneration,
                relayed: relayed)
            let theirs = Connection(
                peer: id, localAddress: peer.addressGeneration, peerAddress: node.addressGeneration, relayed: relayed)
            node.paths[link]?.connection = mine
            node.paths[link]?.connectedGeneration = generation
            peer.paths[peerLink]?.connection = theirs
            peer.paths[peerLink]?.connectedGeneration = peerPath.generation
            let route = PathRoute(kind: relayed ? "relay" : "host")
            for (side, sideLink, sideGeneration) in [(id, link, generation), (peer.id, peerLink, peerPath.generation)] {
                schedule(
                    .pathEvent(side, sideLink, generation: sideGeneration, .selectedPair(route)),
                    after: world.latency * 2)
                schedule(.pathEvent(side, sideLink, generation: sideGeneration, .connected), after: world.latency * 2)
            }
        } else if path.remoteDone, path.remoteCredentials != nil, !path.failScheduled {
            node.paths[link]?.failScheduled = true
            schedule(.iceFail(id, link, generation: generation), after: world.iceFailAfter)
        }
    }

    // MARK: The rendezvous

    private func relay(_ envelope: [UInt8], from id: NodeID, to recipient: MeetingCommand.Recipient) {
        guard rendezvous.up, let sender = rendezvous.members[id] else { return }
        let targets: [(NodeID, RendezvousMemberID)]
        switch recipient {
        case .everyone:
            targets = rendezvous.room(sender.room).filter { $0.0 != id }
        case .member(let member):
            targets = rendezvous.room(sender.room).filter { $0.1 == member }
        }
        for (target, _) in targets {
            guard let connection = rendezvous.members[target]?.connection else { continue }
            schedule(
                .deliver(to: target, from: sender.member, payload: envelope, connection: connection),
                after: world.rendezvousLatency * 2)
        }
    }

    private func admit(_ id: NodeID) {
        let node = nodes[id.index]
        guard rendezvous.up, node.phase == .running, rendezvous.members[id] == nil else { return }
        let room = node.core.configuration.keys.roomID
        let others = rendezvous.room(room)
        guard others.count < world.maxMembers else {
            feed(id, .rendezvousStopped(reason: "the meeting is full: room-full"))
            return
        }
        let member = RendezvousMemberID(rendezvous.nextMember)
        rendezvous.nextMember += 1
        rendezvous.members[id] = (member, room, rendezvous.nextConnection)
        rendezvous.nextConnection += 1
        let reconnected = node.everAdmitted
        node.everAdmitted = true
        feed(
            id,
            .rendezvousJoined(RendezvousWelcome(memberID: member, members: others.map(\.1)), reconnected: reconnected))
        for (other, _) in others {
            schedule(.input(other, .rendezvousMemberJoined(member)), after: world.rendezvousLatency)
        }
    }

    private func dropMember(_ id: NodeID, connection: Int) {
        guard let entry = rendezvous.members[id], entry.connection == connection else { return }
        let phase = nodes[id.index].phase
        // A live member's connection only drops if the node went away or stopped answering pings.
        guard phase != .running else { return }
        rendezvous.members[id] = nil
        for (other, _) in rendezvous.room(entry.room) {
            schedule(.input(other, .rendezvousMemberLeft(entry.member)), after: world.rendezvousLatency)
        }
    }

    /// Reconnects a member that lost its rendezvous connection, after the client's back-off.
    private func reconnect(_ id: NodeID) {
        let backoff = Duration.milliseconds(Int64.random(in: 500...1000, using: &random))
        schedule(.admit(id), after: backoff)
    }

    private func thaw(_ id: NodeID) {
        let node = nodes[id.index]
        guard node.phase == .frozen else { return }
        node.phase = .running
        let inbox = node.inbox
        node.inbox = []
        // Everything that waited is handled now, with the time it is now: the daemon sees the
        // clock jump.
        for event in inbox { handle(event) }
        if rendezvous.members[id] == nil {
            feed(id, .rendezvousDisconnected(reason: "connection lost while suspended"))
            if rendezvous.up { reconnect(id) }
        }
        for link in node.paths.keys.sorted() {
            if let generation = node.paths[link]?.generation {
                schedule(.iceCheck(id, link, generation: generation), after: .milliseconds(1))
            }
        }
        node.scheduledWake = nil
        schedule(.media(id), after: world.mediaInterval)
        wake(id)
    }

    static func milliseconds(_ duration: Duration) -> UInt32 {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return ReportEcho.timestamp(milliseconds: UInt64(max(0, ms)) + 1)
    }
}

extension MeetingCommand {
    /// The command's case name, for counting.
    var kind: String {
        switch self {
        case .sendEnvelope: "sendEnvelope"
        case .createICEAgent: "createICEAgent"
        case .createPath: "createPath"
        case .setRemoteCredentials: "setRemoteCredentials"
        case .addRemoteCandidate: "addRemoteCandidate"
        case .remoteCandidatesDone: "remoteCandidatesDone"
        case .restartPath: "restartPath"
        case .removePath: "removePath"
        case .setRoute: "setRoute"
        case .setRelayPolicy: "setRelayPolicy"
        case .startSession: "startSession"
        case .sendReport: "sendReport"
        case .sendControl: "sendControl"
        case .sendMeshEnvelope: "sendMeshEnvelope"
        case .setMuted: "setMuted"
        case .setEncoderLoss: "setEncoderLoss"
        case .setSendRate: "setSendRate"
        case .setFanOut: "setFanOut"
        case .publish: "publish"
        case .log: "log"
        case .savePins: "savePins"
        case .admitted: "admitted"
        case .end: "end"
        }
    }
}

extension MeetingSimulation.Event {
    /// The node an event happens at, if any.
    var node: MeetingSimulation.NodeID? {
        switch self {
        case .join(let id), .input(let id, _), .wake(let id), .admit(let id), .iceCheck(let id, _, _),
            .iceFail(let id, _, _), .pathEvent(let id, _, _, _), .media(let id), .talking(let id, _),
            .crash(let id), .freeze(let id), .thaw(let id), .memberLeft(let id, _):
            id
        case .datagram(let to, _, _, _), .deliver(let to, _, _, _):
            to
        case .rendezvousDown, .rendezvousUp:
            nil
        }
    }

    /// Whether the event must wait while its node is frozen (the process handles nothing).
    var waitsForAFrozenNode: Bool {
        switch self {
        case .input, .datagram, .deliver, .iceCheck, .iceFail, .pathEvent, .talking, .admit: true
        // A frozen node's timers and media simply stop; thawing starts them again.
        case .wake, .media, .join, .crash, .freeze, .thaw, .memberLeft, .rendezvousDown, .rendezvousUp: false
        }
    }
}
