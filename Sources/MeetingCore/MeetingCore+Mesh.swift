import ControlAPI
import ParleyCore
import ParleyProtocol

/// A mesh that repairs itself (docs/PROTOCOL.md §13): a pair without a working direct path goes
/// through a member that reaches both; signaling goes over the mesh when the rendezvous cannot
/// carry it; a node whose network changed or that woke up restarts its paths.
extension MeetingCore {
    // MARK: What this node reaches, and whom it carries

    /// Peers of version-2 links that are up over their own direct path, with their RTT: what
    /// LINKS lists, and whom this node relays between.
    func directLinks() -> [SessionControl.Links.Peer] {
        peers.compactMap { key, peer -> SessionControl.Links.Peer? in
            guard peer.version >= 2, let link = peer.link, link.machine.state == .up, link.relay == nil else {
                return nil
            }
            let rtt = link.rttMs.map { UInt16(clamping: Int($0.rounded())) } ?? 0xFFFF
            return SessionControl.Links.Peer(identityKey: key, rttMs: rtt)
        }.sorted { $0.identityKey.lexicographicallyPrecedes($1.identityKey) }
    }

    /// LINKS to every version-2 peer when the set changed; the relay policy for the data path
    /// along with it. (Every `linksInterval` anyway, each link with its REPORT: `repeatLinks`.)
    mutating func shareLinks() {
        let direct = directLinks()
        let keys = direct.map(\.identityKey)
        let policy = RelayPolicy(
            linked: Set(keys), maximumPairs: configuration.maximumRelayedPairs,
            fanOutTargets: Set(keys.filter { (peers[$0]?.version ?? 0) >= 4 }))
        if policy != relayPolicy {
            relayPolicy = policy
            output.append(.setRelayPolicy(policy))
        }
        guard keys != linksSent else { return }
        linksSent = keys
        let message = linksMessage(direct)
        for key in sortedPeerKeys {
            guard let peer = peers[key], peer.version >= 2, let link = peer.link, link.established else { continue }
            output.append(.sendControl(link.id, message))
            peers[key]?.link?.linksSentAt = now
        }
    }

    func linksMessage(_ direct: [SessionControl.Links.Peer]) -> SessionControl {
        .links(SessionControl.Links(relays: configuration.maximumRelayedPairs > 0, peers: direct))
    }

    /// LINKS again on one link, with its REPORT, once `linksInterval` passed since the last (the
    /// RTTs in it change): spread over the links as their REPORTs are, not all at once — seven
    /// LINKS of a full meeting are 2 KB, 130 ms of a 128 kbit/s uplink that audio would wait behind.
    mutating func repeatLinks(on key: [UInt8]) {
        guard let peer = peers[key], peer.version >= 2, let link = peer.link, link.established,
            link.linksSentAt.map({ now - $0 >= configuration.timing.linksInterval }) ?? true
        else { return }
        output.append(.sendControl(link.id, linksMessage(directLinks())))
        peers[key]?.link?.linksSentAt = now
    }

    // MARK: Routes

    /// Puts links without a working direct path through a member, and takes them back off it
    /// when that member cannot carry them any more.
    mutating func chooseRoutes() {
        for key in sortedPeerKeys {
            guard let peer = peers[key], peer.version >= 2, let link = peer.link else { continue }
            if let via = link.relay {
                // A member that carries nothing (it froze, or its view of the destination was
                // stale) is given up on, as if it had refused.
                if link.machine.state != .up, let since = link.relayedSince,
                    now - since >= configuration.timing.relayTrial
                {
                    peers[key]?.link?.refusedBy[via] = (now, nil)
                }
                guard !canRelay(via, toward: key) else { continue }
                route(
                    key, via: relayCandidate(toward: key, excluding: [via]), why: "the relaying member cannot carry it")
            } else if needsRelay(link), let candidate = relayCandidate(toward: key, excluding: []) {
                route(key, via: candidate, why: "no direct path")
            }
        }
    }

    private func needsRelay(_ link: Link) -> Bool {
        switch link.machine.state {
        case .lost, .restarting, .failed:
            // Not at the first moment: a member that lost the same peer (it froze or crashed)
            // says so in its next LINKS, within a round trip of noticing.
            link.machine.troubleSince.map { now - $0 >= configuration.timing.relayDelay } ?? true
        case .signaling, .checking, .handshaking:
            !link.directConnected && now - link.startedAt >= configuration.timing.relayAfter
        case .up, .gone:
            false
        }
    }

    /// Whether `member` can relay toward `destination`: its own link is up directly, its latest
    /// LINKS lists the destination and says it relays, and it did not refuse lately.
    func canRelay(_ member: [UInt8], toward destination: [UInt8]) -> Bool {
        guard member != destination, let relay = peers[member], relay.version >= 2, let link = relay.link,
            link.machine.state == .up, link.relay == nil, let links = relay.links, links.relays,
            links.peers.contains(where: { $0.identityKey == destination })
        else { return false }
        if let refused = peers[destination]?.link?.refusedBy[member],
            now - refused.at < configuration.timing.refusalMemory
        {
            return false
        }
        return true
    }

    /// A member that said it had no link with a destination and now lists it in its LINKS can
    /// carry it after all: its link (with the destination, or with us) was not up on its side
    /// yet when ours were, a race of a round trip that must not cost the pair `refusalMemory`.
    /// A member that is busy or declines stays refused.
    mutating func forgetOutdatedRefusals(by member: [UInt8], _ links: SessionControl.Links) {
        for listed in links.peers where peers[listed.identityKey]?.link?.refusedBy[member]?.reason == .notLinked {
            peers[listed.identityKey]?.link?.refusedBy[member] = nil
        }
    }

    /// The member through which `destination` is reached fastest: the lowest sum of our RTT to
    /// it and its RTT to the destination.
    func relayCandidate(toward destination: [UInt8], excluding: Set<[UInt8]>) -> [UInt8]? {
        var best: (cost: Double, key: [UInt8])?
        for key in sortedPeerKeys where !excluding.contains(key) && canRelay(key, toward: destination) {
            let relay = peers[key]!
            let first = relay.link?.rttMs ?? 1000
            let second =
                relay.links?.peers.first { $0.identityKey == destination }.map {
                    $0.rttMs == 0xFFFF ? 1000 : Double($0.rttMs)
                } ?? 1000
            if best.map({ first + second < $0.cost }) ?? true { best = (first + second, key) }
        }
        return best?.key
    }

    /// Sends the link's datagrams through `via` (nil: over ICE) from now on.
    mutating func route(_ key: [UInt8], via: [UInt8]?, why: String) {
        guard let link = peers[key]?.link, link.relay != via else { return }
        let relayLink = via.flatMap { peers[$0]?.link?.id }
        if via != nil, relayLink == nil { return }
        peers[key]?.link?.relay = via
        peers[key]?.link?.relayedSince = via == nil ? nil : now
        peers[key]?.link?.routeChangedAt = now
        meshChanged = true
        if via != nil {
            if link.relay == nil {
                let probe = now + configuration.timing.probeInterval
                peers[key]?.link?.nextProbe = probe
            }
        } else {
            peers[key]?.link?.nextProbe = nil
        }
        output.append(.setRoute(link.id, via: relayLink))
        let name = peers[key]?.name ?? "?"
        log(
            .info, via == nil ? "link back on its direct path" : "link goes through a member",
            ["peer": peers[key]?.shortID ?? "?", "via": via.map { hexString($0.prefix(8)) } ?? "-", "why": why])
        publish(
            ControlEvent(
                kind: .link, peer: peers[key]?.shortID, name: name, state: link.machine.state.eventState,
                route: via == nil ? link.route?.kind : Self.relayedRoute,
                message: via.map { "via \(peers[$0]?.name ?? "?")" }))
        // A link that never had a session starts one over the member's path.
        if via != nil, !link.established, link.machine.state != .up { feed(.pathReady, toPeer: key) }
    }

    static let relayedRoute = "peer"

    /// An authenticated packet arrived directly or through a member: the peer's choice of route
    /// is a fact about the path, so follow it when ours does not work (the peer hears nothing of
    /// ours either), and come back to the direct path when packets come over it again.
    mutating func noteAuthenticated(from key: [UInt8], via: [UInt8]?, at: Instant? = nil) {
        guard let link = peers[key]?.link else { return }
        let at = at ?? now
        if let via {
            peers[key]?.link?.lastRelayedPacket = max(link.lastRelayedPacket ?? at, at)
            let directQuiet = link.lastDirectPacket.map { now - $0 >= configuration.timing.link.quickLostAfter } ?? true
            if link.relay == nil, directQuiet, peers[via]?.link != nil {
                route(key, via: via, why: "the peer's packets come through a member")
            }
        } else {
            peers[key]?.link?.lastDirectPacket = max(link.lastDirectPacket ?? at, at)
            if link.relay != nil, link.directConnected { route(key, via: nil, why: "direct packets again") }
        }
    }

    /// While a link goes through a member, its lead tries the direct path again now and then.
    mutating func probeDirectPaths() {
        for key in sortedPeerKeys {
            guard let link = peers[key]?.link, link.relay != nil, link.machine.isInitiator,
                let next = link.nextProbe, now >= next
            else { continue }
            var interval = configuration.timing.probeInterval
            for _ in 0...link.probes where interval < configuration.timing.maximumProbeInterval {
                interval = min(interval * 2, configuration.timing.maximumProbeInterval)
            }
            peers[key]?.link?.probes += 1
            peers[key]?.link?.nextProbe = now + interval
            log(.debug, "trying the direct path again", ["peer": peers[key]?.shortID ?? "?"])
            restartICE(of: key, to: link.generation + 1, announce: true, keepingOldPath: false)
        }
    }

    // MARK: Restarts of the node's own paths

    /// The node woke up (its inputs come long after its deadline): paths, NAT mappings and
    /// the peers' view of us are stale. Every link restarts at once, whatever its role, at a
    /// generation above anything seen, and the node announces itself again.
    mutating func resumed(after gap: Duration) {
        log(.notice, "woke up after a pause; restarting every path", ["gap": "\(gap)"])
        restartAllLinks(why: "woke up after \(gap)")
        send(hello(), to: nil)
    }

    mutating func restartAllLinks(why: String) {
        for key in sortedPeerKeys {
            guard let link = peers[key]?.link, link.pathCreated else { continue }
            restartICE(of: key, to: link.generation + 1, announce: true, keepingOldPath: false)
            feed(.restartBegan, toPeer: key)
        }
        log(.info, "restarted every path", ["why": why])
    }

    // MARK: Signaling over the mesh (§13.5)

    /// Sends an envelope over sessions instead of the rendezvous: straight to the peer if its
    /// link works, else through a member that reaches it; a broadcast to every peer whose link
    /// works, and through each for those we have none with.
    mutating func sendOverMesh(_ envelope: [UInt8], to key: [UInt8]?) {
        if let key {
            if let link = peers[key]?.link, link.established, link.machine.state == .up, (peers[key]?.version ?? 1) >= 2
            {
                output.append(.sendMeshEnvelope(envelope, over: link.id, forwardTo: nil))
            } else if let relay = relayCandidate(toward: key, excluding: []), let relayLink = peers[relay]?.link {
                output.append(.sendMeshEnvelope(envelope, over: relayLink.id, forwardTo: key))
            } else {
                log(.debug, "no way to reach the peer; envelope dropped", ["peer": peers[key]?.shortID ?? "?"])
            }
            return
        }
        let reachable = sortedPeerKeys.filter { key in
            guard let peer = peers[key], peer.version >= 2, let link = peer.link else { return false }
            return link.established && link.machine.state == .up
        }
        let unreached = peers.keys.contains { key in !reachable.contains(key) }
        for key in reachable {
            guard let link = peers[key]?.link else { continue }
            output.append(.sendMeshEnvelope(envelope, over: link.id, forwardTo: nil))
            if unreached { output.append(.sendMeshEnvelope(envelope, over: link.id, forwardTo: RelayPacket.everyone)) }
        }
    }

    var sortedPeerKeys: [[UInt8]] { peerOrder }
}
