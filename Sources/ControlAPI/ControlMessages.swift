// The local control API between `parley` (CLI) and `parleyd` (daemon): newline-delimited JSON over
// a Unix socket (mode 0600). One request line, one response line; `watch` then streams event lines
// until the client disconnects. Versioned so a CLI and daemon of different releases fail clearly.

/// The control API version this build speaks. Bumped on incompatible changes.
public let controlAPIVersion = 1

/// What the CLI asks of the daemon.
public struct ControlRequest: Codable, Sendable, Equatable {
    public enum Method: String, Codable, Sendable, CaseIterable {
        case status, join, leave, mute, unmute, verify, watch
        /// Send `text` to everyone in the meeting (docs/PROTOCOL.md §14.1).
        case say
        /// The meeting's last chat messages.
        case chat
        /// The audio devices the sound server has, and the ones in use.
        case devices
        /// Switch the microphone (`device`: a source name, nil for the server's default).
        case input
        /// Switch the speaker (`device`: a sink name, nil for the server's default).
        case output
        /// Set one peer's volume (`peer`, `percent`), or list them (no `peer`).
        case volume
        /// Play a short tone and measure the microphone (`AudioTestResult`).
        case testAudio = "test-audio"
        /// Start recording the meeting to `path` (absolute; nil: a new file in the default
        /// directory), or stop.
        case recordStart = "record-start"
        case recordStop = "record-stop"
    }

    public var version: Int
    public var method: Method
    /// For `join`: the invite string.
    public var invite: String?
    /// For `say`: the message.
    public var text: String?
    /// For `input` and `output`: the device's name; nil for the sound server's default.
    public var device: String?
    /// For `volume`: a member's name or id, and the volume in percent (`volumeRange`).
    public var peer: String?
    public var percent: Int?
    /// For `record-start`: the file to write (an absolute path), nil for the default.
    public var path: String?

    public init(
        _ method: Method, invite: String? = nil, text: String? = nil, device: String? = nil, peer: String? = nil,
        percent: Int? = nil, path: String? = nil
    ) {
        self.version = controlAPIVersion
        self.method = method
        self.invite = invite
        self.text = text
        self.device = device
        self.peer = peer
        self.percent = percent
        self.path = path
    }
}

/// The daemon's answer to one request.
public struct ControlResponse: Codable, Sendable, Equatable {
    public var ok: Bool
    /// One clear line saying what went wrong, when `ok` is false.
    public var error: String?
    /// For `status`.
    public var status: StatusReport?
    /// For `verify`.
    public var verification: Verification?
    /// What happened, for people, when `ok` (e.g. "joined: 2 others in the meeting").
    public var message: String?
    /// For `chat`: the last messages, oldest first.
    public var chat: [ChatMessage]?
    /// For `devices`.
    public var devices: DeviceList? = nil
    /// For `volume`: every peer's volume.
    public var volumes: [PeerVolume]? = nil
    /// For `test-audio`.
    public var audioTest: AudioTestResult? = nil

    public static func success(
        status: StatusReport? = nil, verification: Verification? = nil, message: String? = nil,
        chat: [ChatMessage]? = nil
    ) -> ControlResponse {
        ControlResponse(ok: true, error: nil, status: status, verification: verification, message: message, chat: chat)
    }

    public static func failure(_ message: String) -> ControlResponse {
        ControlResponse(ok: false, error: message, status: nil, verification: nil, message: nil, chat: nil)
    }
}

/// One chat message (`parley chat`, `status --json`'s `"chat"`). The sender's id and name are
/// those of the session it came over (docs/PROTOCOL.md §14.1), never taken from the message.
public struct ChatMessage: Codable, Sendable, Equatable {
    /// When this node received it (or sent it, for its own), RFC 3339 UTC with milliseconds.
    public var time: String
    /// The sender's member id (this node's own id for its own messages).
    public var from: String
    public var name: String
    public var text: String

    public init(time: String, from: String, name: String, text: String) {
        self.time = time
        self.from = from
        self.name = name
        self.text = text
    }
}

/// `parley status --json`: `{"self": {...}, "peers": [...], "chat": [...]}`.
public struct StatusReport: Codable, Sendable, Equatable {
    public var node: NodeStatus
    public var peers: [PeerStatus]
    /// The meeting's last chat messages (at most 50), oldest first.
    public var chat: [ChatMessage]

    public init(node: NodeStatus, peers: [PeerStatus], chat: [ChatMessage] = []) {
        self.node = node
        self.peers = peers
        self.chat = chat
    }

    enum CodingKeys: String, CodingKey {
        case node = "self"
        case peers, chat
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        node = try container.decode(NodeStatus.self, forKey: .node)
        peers = try container.decode([PeerStatus].self, forKey: .peers)
        chat = try container.decodeIfPresent([ChatMessage].self, forKey: .chat) ?? []
    }
}

/// This node. Keys are always present (null when unknown) so scripts can rely on the shape.
public struct NodeStatus: Codable, Sendable, Equatable {
    /// Short, stable id of this node's identity key (hex).
    public var id: String
    public var name: String
    public var muted: Bool
    /// Whether the node is in a meeting, joining, or idle.
    public var meeting: MeetingState
    /// The invite of the current meeting (shown only to the local user over the 0600 socket).
    public var invite: String?
    /// The meeting security code everyone should see alike (`parley verify`).
    public var securityCode: String?
    /// The link to the rendezvous (audio does not need it).
    public var rendezvous: RendezvousConnectionState
    /// The pairs of members this node relays for (§13), each as two member ids.
    public var relaying: [[String]]
    /// Whether the microphone hears speech (and this node is not muted).
    public var speaking: Bool
    /// The devices in use (`pulse:NAME`, `wav:PATH`, …; `pulse` for the server's default).
    public var input: String?
    public var output: String?
    /// Whether this node records the meeting (`parley record start`), and to which file.
    public var recording: Bool
    public var recordingPath: String?
    /// Where this node's voice spends its time before the network (null while no audio runs).
    public var latencyMs: SendLatency?
    /// The bandwidth estimate and the encoding that fits it (null: `--fixed-rate`, or no meeting).
    public var sendRate: SendRateStatus?

    public init(
        id: String, name: String, muted: Bool, meeting: MeetingState, invite: String?, securityCode: String?,
        rendezvous: RendezvousConnectionState, relaying: [[String]] = [], speaking: Bool = false, input: String? = nil,
        output: String? = nil, recordingPath: String? = nil, latencyMs: SendLatency? = nil
    ) {
        self.latencyMs = latencyMs
        self.relaying = relaying
        self.speaking = speaking
        self.input = input
        self.output = output
        self.recording = recordingPath != nil
        self.recordingPath = recordingPath
        self.id = id
        self.name = name
        self.muted = muted
        self.meeting = meeting
        self.invite = invite
        self.securityCode = securityCode
        self.rendezvous = rendezvous
    }

    enum CodingKeys: String, CodingKey {
        case id, name, muted, meeting, invite
        case securityCode = "security_code"
        case rendezvous, relaying, speaking, input, output
        case recording
        case recordingPath = "recording_path"
        case latencyMs = "latency_ms"
        case sendRate = "send_rate"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(name, forKey: .name)
        try container.encode(muted, forKey: .muted)
        try container.encode(meeting, forKey: .meeting)
        try container.encode(invite, forKey: .invite)
        try container.encode(securityCode, forKey: .securityCode)
        try container.encode(rendezvous, forKey: .rendezvous)
        try container.encode(relaying, forKey: .relaying)
        try container.encode(speaking, forKey: .speaking)
        try container.encode(input, forKey: .input)
        try container.encode(output, forKey: .output)
        try container.encode(recording, forKey: .recording)
        try container.encode(recordingPath, forKey: .recordingPath)
        try container.encode(latencyMs, forKey: .latencyMs)
        try container.encode(sendRate, forKey: .sendRate)
    }
}

/// What the send-side bandwidth estimate allows and what the encoder makes of it (node
/// `"send_rate"`).
public struct SendRateStatus: Codable, Sendable, Equatable {
    /// Bits per second (in kb/s) the path to each peer takes, headers included.
    public var estimateKbps: Double
    /// The same for the whole uplink: the estimate times the packets a frame costs (one per
    /// peer, or fewer while one copy goes up through a member).
    public var uplinkKbps: Double
    /// Whether the path, not the configured bitrate, sets the rate now.
    public var limited: Bool
    /// The encoding in use: the Opus bitrate, the packet length and the RFC 2198 copies.
    public var opusKbps: Double
    public var packetMs: Int
    public var copies: Int
    /// Peers whose latest reports say our media queues or is lost on the way (short ids).
    public var congested: [String]
    /// The member (short id) our voice goes up to once and is passed on by (PROTOCOL §15);
    /// absent: a copy to every peer.
    public var fanOut: String?

    public init(
        estimateKbps: Double, uplinkKbps: Double, limited: Bool, opusKbps: Double, packetMs: Int, copies: Int,
        congested: [String], fanOut: String? = nil
    ) {
        self.estimateKbps = estimateKbps
        self.uplinkKbps = uplinkKbps
        self.limited = limited
        self.opusKbps = opusKbps
        self.packetMs = packetMs
        self.copies = copies
        self.congested = congested
        self.fanOut = fanOut
    }

    enum CodingKeys: String, CodingKey {
        case estimateKbps = "estimate_kbps"
        case uplinkKbps = "uplink_kbps"
        case limited
        case opusKbps = "opus_kbps"
        case packetMs = "packet_ms"
        case copies, congested
        case fanOut = "fan_out"
    }
}

/// The latency budget of this node's voice up to the network, in milliseconds (node
/// `"latency_ms"`). With a peer's `"latency_ms"` on the other side it adds up to mouth-to-ear.
public struct SendLatency: Codable, Sendable, Equatable {
    /// Queued in the sound server before the capture thread read it; null without a sound server.
    public var capture: Double?
    /// A frame fills before it is encoded (`--frame-ms`).
    public var frame: Double
    /// The encoder's lookahead (Opus' algorithmic delay).
    public var lookahead: Double
    /// The noise suppressor's algorithmic delay (one frame while it runs: real devices).
    public var denoise: Double
    /// Echo cancellation, noise suppression and encoding of one frame (the work, not a delay).
    public var process: Double
    /// Sealing one frame for every peer and sending it.
    public var send: Double
    /// The sum of the above.
    public var total: Double

    public init(capture: Double?, frame: Double, lookahead: Double, denoise: Double, process: Double, send: Double) {
        self.capture = capture
        self.frame = frame
        self.lookahead = lookahead
        self.denoise = denoise
        self.process = process
        self.send = send
        total = (capture ?? 0) + frame + lookahead + denoise + process + send
    }

    enum CodingKeys: String, CodingKey {
        case capture, frame, lookahead, denoise, process, send, total
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(capture, forKey: .capture)
        try container.encode(frame, forKey: .frame)
        try container.encode(lookahead, forKey: .lookahead)
        try container.encode(denoise, forKey: .denoise)
        try container.encode(process, forKey: .process)
        try container.encode(send, forKey: .send)
        try container.encode(total, forKey: .total)
    }
}

/// The latency budget of a peer's voice from the network to this node's speaker, in
/// milliseconds (peer `"latency_ms"`).
public struct ReceiveLatency: Codable, Sendable, Equatable {
    /// One way: half the smoothed round-trip time; null until measured.
    public var network: Double?
    /// How long the peer's frames wait in the jitter buffer, from the fastest packets' arrival to
    /// their play-out (the playback thread mixes 10 ms at a time, so up to 10 ms is the player's
    /// phase, not jitter).
    public var jitterBuffer: Double
    /// The delay the jitter buffer aims to add on top of the fastest packets for this link's
    /// jitter and loss (0 on a clean link).
    public var jitterTarget: Double
    /// Decoding every peer's audio for one playback period (10 ms) and mixing it.
    public var mix: Double
    /// Queued in the sound server before it is heard; null without a sound server.
    public var playback: Double?
    /// network + jitter buffer + mix + playback.
    public var total: Double

    public init(network: Double?, jitterBuffer: Double, jitterTarget: Double, mix: Double, playback: Double?) {
        self.network = network
        self.jitterBuffer = jitterBuffer
        self.jitterTarget = jitterTarget
        self.mix = mix
        self.playback = playback
        total = (network ?? 0) + jitterBuffer + mix + (playback ?? 0)
    }

    enum CodingKeys: String, CodingKey {
        case network
        case jitterBuffer = "jitter_buffer"
        case jitterTarget = "jitter_target"
        case mix, playback, total
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(network, forKey: .network)
        try container.encode(jitterBuffer, forKey: .jitterBuffer)
        try container.encode(jitterTarget, forKey: .jitterTarget)
        try container.encode(mix, forKey: .mix)
        try container.encode(playback, forKey: .playback)
        try container.encode(total, forKey: .total)
    }
}

/// Whether the node is in a meeting (`parley status`: `"meeting"`).
public enum MeetingState: String, Codable, Sendable, CaseIterable {
    case idle
    case joining
    case inMeeting = "in-meeting"
}

/// The node's connection to the rendezvous (`parley status`: `"rendezvous"`).
public enum RendezvousConnectionState: String, Codable, Sendable, CaseIterable {
    /// Not admitted yet.
    case connecting
    case connected
    /// Lost; the client reconnects by itself (audio between connected peers goes on).
    case reconnecting
    /// No rendezvous: not in a meeting, or it refused to take this node back.
    case none
}

/// A peer link's state (`parley status`: `"state"`).
public enum LinkState: String, Codable, Sendable, CaseIterable {
    /// Exchanging ICE credentials and candidates through the rendezvous.
    case signaling
    /// ICE connectivity checks are running.
    case checking
    /// ICE found a path; the Noise handshake runs over it.
    case handshaking
    /// Session established and audio flows both ways.
    case up
    /// Was up, but nothing authenticated has arrived for a while.
    case lost
    /// An ICE restart is under way (new credentials, new checks).
    case restarting
    /// No path works (no direct path, no TURN relay, no member that can relay): `reason` says
    /// why. It keeps being retried, less and less often, while both are in the meeting.
    case failed
    /// The peer left; the link is removed.
    case gone
}

/// The `state` of a `parley watch` event: a meeting, rendezvous, mute or link state, spelled the
/// same way in every release (scripts match on it).
public struct EventState: RawRepresentable, Codable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ link: LinkState) { rawValue = link.rawValue }
    public var description: String { rawValue }

    public static let joining = EventState(rawValue: "joining")
    public static let inMeeting = EventState(rawValue: "in-meeting")
    public static let left = EventState(rawValue: "left")
    public static let failed = EventState(rawValue: "failed")
    public static let rendezvousConnected = EventState(rawValue: "rendezvous-connected")
    public static let rendezvousReconnecting = EventState(rawValue: "rendezvous-reconnecting")
    public static let muted = EventState(rawValue: "muted")
    public static let unmuted = EventState(rawValue: "unmuted")
    public static let gone = EventState(.gone)
    /// Of a `recording` event.
    public static let recordingStarted = EventState(rawValue: "started")
    public static let recordingStopped = EventState(rawValue: "stopped")

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

extension LinkState {
    /// This state as a `parley watch` event state.
    public var eventState: EventState { EventState(self) }
}

/// One peer link. Keys are always present (null when not yet measured).
public struct PeerStatus: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var state: LinkState
    /// `host`, `srflx`, `prflx` or `relay` (TURN) once ICE selected a pair; `peer` while the
    /// link goes through another member (`via` names it).
    public var route: String?
    /// The id of the member the link goes through, when `route` is `peer`.
    public var via: String?
    /// Why the link is not up (e.g. for `failed`: "ICE found no working path"), null when up.
    public var reason: String?
    public var rttMs: Double?
    public var lossPct: Double?
    public var jitterMs: Double?
    public var rxKbps: Double
    public var txKbps: Double
    public var packetsRx: UInt64
    public var packetsTx: UInt64
    public var concealedMs: Double
    /// The peer's audio skipped to bring the jitter buffer's delay down while it played (after a
    /// delay spike, a queue that drained): a frame skipped in speech is heard, one in a pause is not.
    public var skippedMs: Double
    /// Whether this node plays the peer above the speaking level right now.
    public var speaking: Bool
    /// This node's volume for the peer, in percent (`parley volume`; local only).
    public var volumePct: Int
    /// Whether the peer says it records the meeting (docs/PROTOCOL.md §14.2).
    public var recording: Bool
    /// Where the peer's voice spends its time from the network to this node's speaker (null
    /// while no audio runs for the link).
    public var latencyMs: ReceiveLatency?
    /// How long our media waits in queues on the way to the peer, as the peer measures it
    /// (docs/PROTOCOL.md §10.1 `queue_delay_ms`; null: no estimate).
    public var queueDelayMs: Double?
    /// The peer's frames a member passed on (§15.2) whose signature did not verify: the member
    /// altered or made them up. Dropped; never the peer's fault.
    public var forgedPassedOn: Int

    public init(
        id: String, name: String, state: LinkState, route: String? = nil, via: String? = nil, reason: String? = nil,
        rttMs: Double? = nil, lossPct: Double? = nil,
        jitterMs: Double? = nil, rxKbps: Double = 0, txKbps: Double = 0, packetsRx: UInt64 = 0, packetsTx: UInt64 = 0,
        concealedMs: Double = 0, skippedMs: Double = 0, speaking: Bool = false, volumePct: Int = 100,
        recording: Bool = false,
        queueDelayMs: Double? = nil, latencyMs: ReceiveLatency? = nil, forgedPassedOn: Int = 0
    ) {
        self.forgedPassedOn = forgedPassedOn
        self.latencyMs = latencyMs
        self.queueDelayMs = queueDelayMs
        self.speaking = speaking
        self.volumePct = volumePct
        self.recording = recording
        self.id = id
        self.name = name
        self.state = state
        self.route = route
        self.via = via
        self.reason = reason
        self.rttMs = rttMs
        self.lossPct = lossPct
        self.jitterMs = jitterMs
        self.rxKbps = rxKbps
        self.txKbps = txKbps
        self.packetsRx = packetsRx
        self.packetsTx = packetsTx
        self.concealedMs = concealedMs
        self.skippedMs = skippedMs
    }

    enum CodingKeys: String, CodingKey {
        case id, name, state, route, via, reason
        case rttMs = "rtt_ms"
        case lossPct = "loss_pct"
        case jitterMs = "jitter_ms"
        case rxKbps = "rx_kbps"
        case txKbps = "tx_kbps"
        case packetsRx = "packets_rx"
        case packetsTx = "packets_tx"
        case concealedMs = "concealed_ms"
        case skippedMs = "skipped_ms"
        case speaking
        case volumePct = "volume_pct"
        case recording
        case latencyMs = "latency_ms"
        case queueDelayMs = "queue_delay_ms"
        case forgedPassedOn = "forged_passed_on"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(name, forKey: .name)
        try container.encode(state, forKey: .state)
        try container.encode(route, forKey: .route)
        try container.encode(via, forKey: .via)
        try container.encode(reason, forKey: .reason)
        try container.encode(rttMs, forKey: .rttMs)
        try container.encode(lossPct, forKey: .lossPct)
        try container.encode(jitterMs, forKey: .jitterMs)
        try container.encode(rxKbps, forKey: .rxKbps)
        try container.encode(txKbps, forKey: .txKbps)
        try container.encode(packetsRx, forKey: .packetsRx)
        try container.encode(packetsTx, forKey: .packetsTx)
        try container.encode(concealedMs, forKey: .concealedMs)
        try container.encode(skippedMs, forKey: .skippedMs)
        try container.encode(speaking, forKey: .speaking)
        try container.encode(volumePct, forKey: .volumePct)
        try container.encode(recording, forKey: .recording)
        try container.encode(latencyMs, forKey: .latencyMs)
        try container.encode(queueDelayMs, forKey: .queueDelayMs)
        try container.encode(forgedPassedOn, forKey: .forgedPassedOn)
    }
}

/// `parley verify`: the code to read aloud and who it covers.
public struct Verification: Codable, Sendable, Equatable {
    public var securityCode: String
    /// Names and ids of the members the code covers, this node included.
    public var members: [Member]
    /// Who has the invite and is in the room but has no session with this node after a while
    /// (not covered by the code): someone listening in on the signaling, or a member whose
    /// network blocks every path.
    public var notConnected: [Member]
    /// Who records the meeting now (this node included), as each said (§14.2).
    public var recording: [Member]

    public struct Member: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public init(id: String, name: String) {
            self.id = id
            self.name = name
        }
    }

    public init(securityCode: String, members: [Member], notConnected: [Member] = [], recording: [Member] = []) {
        self.securityCode = securityCode
        self.members = members
        self.notConnected = notConnected
        self.recording = recording
    }

    enum CodingKeys: String, CodingKey {
        case securityCode = "security_code"
        case members
        case notConnected = "not_connected"
        case recording
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        securityCode = try container.decode(String.self, forKey: .securityCode)
        members = try container.decode([Member].self, forKey: .members)
        notConnected = try container.decodeIfPresent([Member].self, forKey: .notConnected) ?? []
        recording = try container.decodeIfPresent([Member].self, forKey: .recording) ?? []
    }
}

/// A live event for `parley watch`, one JSON line each.
public struct ControlEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// A peer joined the meeting (its identity was authenticated).
        case peerJoined = "peer-joined"
        /// A peer left or was removed.
        case peerLeft = "peer-left"
        /// A link changed state or route.
        case link
        /// The set of peers currently speaking changed.
        case speaking
        /// This node was muted or unmuted.
        case muted
        /// The meeting started, ended, or the rendezvous link changed.
        case meeting
        /// The security code changed (membership changed).
        case securityCode = "security-code"
        /// Something the user should know (e.g. a pinned identity changed).
        case warning
        /// A chat message (`message`) from `peer` / `name` (or from this node), at `time`.
        case chat
        /// An audio device changed: switched, lost (fallen back to the default) or back.
        case device
        /// A member (`peer`), or this node (no `peer`), started or stopped recording the meeting.
        case recording
    }

    public var kind: Kind
    public var peer: String?
    public var name: String?
    public var state: EventState?
    public var route: String?
    public var speaking: [String]?
    public var message: String?
    /// For `chat`: when it arrived, RFC 3339 UTC.
    public var time: String?

    public init(
        kind: Kind, peer: String? = nil, name: String? = nil, state: EventState? = nil, route: String? = nil,
        speaking: [String]? = nil, message: String? = nil, time: String? = nil
    ) {
        self.time = time
        self.kind = kind
        self.peer = peer
        self.name = name
        self.state = state
        self.route = route
        self.speaking = speaking
        self.message = message
    }
}
