import ControlAPI
public import ParleyCore
import ParleyProtocol

/// Chat (docs/PROTOCOL.md §14.1): messages to every member over the pairwise sessions, reliable
/// and in order per sender. The streams with a peer live as long as its session epoch, not its
/// link, so a restart of ICE, a new handshake, a relay or a new link neither repeats nor loses a
/// message; the name shown is always the one of the session the message came over.
extension MeetingCore {
    /// Sends `text` to every member in the meeting (`parley say`), or says why not.
    public mutating func say(
        _ text: String, at now: Instant
    ) -> (outcome: Result<ChatDelivery, ChatRefusal>, commands: [MeetingCommand]) {
        var outcome = Result<ChatDelivery, ChatRefusal>.failure(.notInMeeting)
        let commands = step(at: now, changesMesh: false) { core in outcome = core.sendChat(text) }
        return (outcome, commands)
    }

    /// The last messages of the meeting, oldest first (`parley chat`, `status`).
    public var chat: [ChatEntry] { chatLog }

    mutating func sendChat(_ text: String) -> Result<ChatDelivery, ChatRefusal> {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return .failure(.empty) }
        guard bytes.count <= SessionControl.Chat.maximumMessageBytes else {
            return .failure(.tooLong(bytes: bytes.count))
        }
        guard admitted else { return .failure(.notInMeeting) }
        guard chatRate.take(now: nanosecondsSinceStart) else { return .failure(.tooFast) }
        var delivery = ChatDelivery(recipients: [], unreachable: [])
        for key in peerOrder {
            guard let peer = peers[key], peer.link != nil else { continue }
            guard peer.version >= 3 else {
                delivery.unreachable.append(peer.name)
                continue
            }
            if prepareChatStreams(with: key) { chatStreams[key]!.enqueue(bytes) }
            delivery.recipients.append(peer.name)
            sendChatPieces(to: key)
        }
        let me = configuration.identity.peerIdentity.shortID
        addToChatLog(ChatEntry(at: now, fromID: me, name: configuration.displayName, text: text.displayableChat))
        log(.debug, "chat message sent", ["bytes": "\(bytes.count)", "to": "\(delivery.recipients.count)"])
        return .success(delivery)
    }

    /// Makes `chatStreams[key]` the streams of the peer's current session epoch: new ones when
    /// the epoch is not the one they were made for (a restarted process knows nothing of the old
    /// numbering, and gets no earlier messages). False for an unknown peer.
    mutating func prepareChatStreams(with key: [UInt8]) -> Bool {
        guard let epoch = peers[key]?.epoch else { return false }
        if chatStreams[key]?.epoch != epoch { chatStreams[key] = ChatStreams(epoch: epoch) }
        return true
    }

    /// Whether chat may go over the peer's session now: version 3 and keys.
    func chatCanSend(to key: [UInt8]) -> LinkID? {
        guard let peer = peers[key], peer.version >= 3, let link = peer.link, link.established else { return nil }
        return link.id
    }

    /// Sends the pieces the window lets out for the first time.
    mutating func sendChatPieces(to key: [UInt8]) {
        let (now, rtt) = (self.now, peers[key]?.link?.rttMs)
        guard let id = chatCanSend(to: key), prepareChatStreams(with: key) else { return }
        for piece in chatStreams[key]!.transmit(now: now, rttMs: rtt) { output.append(.sendControl(id, .chat(piece))) }
    }

    /// The session has keys again (established, or re-keyed after an ICE restart): what was in
    /// flight goes out at once, and what waited for it.
    mutating func chatSessionWorks(with key: [UInt8]) {
        guard chatStreams[key] != nil, prepareChatStreams(with: key) else { return }
        let now = self.now
        chatStreams[key]!.resume(now: now)
        sendChatPieces(to: key)
    }

    /// When a retransmission is due on a link that can carry it.
    var chatDeadline: Instant? {
        var earliest: Instant?
        for (key, streams) in chatStreams where streams.inFlight > 0 {
            guard chatCanSend(to: key) != nil, peers[key]?.epoch == streams.epoch else { continue }
            earliest = Self.earlier(earliest, streams.retransmitAt)
        }
        return earliest
    }

    mutating func runChatTimers() {
        let now = self.now
        guard let due = chatDeadline, now >= due else { return }
        for key in peerOrder {
            guard let id = chatCanSend(to: key), let streams = chatStreams[key], streams.epoch == peers[key]?.epoch,
                let at = streams.retransmitAt, now >= at
            else { continue }
            let rtt = peers[key]?.link?.rttMs
            for piece in chatStreams[key]!.retransmit(now: now, rttMs: rtt) {
                output.append(.sendControl(id, .chat(piece)))
            }
        }
    }

    /// A CHAT piece over the peer's session: complete messages go to the log and `watch` under
    /// the session's name; the acknowledgement goes back every time.
    mutating func chatReceived(_ piece: SessionControl.Chat, from key: [UInt8]) {
        guard let id = chatCanSend(to: key), let peer = peers[key], prepareChatStreams(with: key) else { return }
        let result = chatStreams[key]!.receive(piece)
        for text in result.messages {
            let shown = text.displayableChat
            addToChatLog(ChatEntry(at: now, fromID: peer.shortID, name: peer.name, text: shown))
            publish(ControlEvent(kind: .chat, peer: peer.shortID, name: peer.name, message: shown))
            log(.debug, "chat message received", ["peer": peer.shortID, "bytes": "\(text.utf8.count)"])
        }
        if result.dropped > 0 {
            log(.info, "chat message dropped: not UTF-8 or too long", ["peer": peer.shortID])
        }
        output.append(.sendControl(id, .chatAck(cumulative: result.acknowledge)))
    }

    mutating func chatAcknowledged(_ cumulative: UInt32, by key: [UInt8]) {
        let (now, rtt) = (self.now, peers[key]?.link?.rttMs)
        guard chatCanSend(to: key) != nil, prepareChatStreams(with: key),
            chatStreams[key]!.acknowledged(cumulative, now: now, rttMs: rtt)
        else { return }
        sendChatPieces(to: key)
    }

    mutating func addToChatLog(_ entry: ChatEntry) {
        chatLog.append(entry)
        if chatLog.count > ChatLimits.logLength { chatLog.removeFirst(chatLog.count - ChatLimits.logLength) }
    }
}
