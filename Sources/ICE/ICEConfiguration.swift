import ParleyCore

/// How a node's ICE agent gathers and connects. One configuration per node; every peer stream
/// uses it.
public struct ICEConfiguration: Sendable {
    /// STUN server for server-reflexive candidates (RFC 5389). None by default: Parley never
    /// contacts a public server the user did not choose.
    public var stunServer: ICEServerEndpoint?
    /// TURN relays (RFC 5766), tried in order; libnice takes up to 8.
    public var turnServers: [TURNServer]
    /// Offer and use relayed candidates only (libnice `force-relay`): peers see the relay's address,
    /// never this node's. Needs a TURN server.
    public var relayOnly: Bool
    /// Gather host candidates on these addresses only (e.g. 127.0.0.1 for tests and single-machine
    /// meetings). Empty: every interface libnice finds.
    public var localAddresses: [IPAddress]
    /// RFC 6544 ICE-TCP. Off by default (with libnice it connects ~3× slower here).
    public var iceTCP: Bool
    /// RFC 7675 consent freshness: a path that stops answering fails after ~30 s, so a peer that
    /// vanished is noticed even when nothing is sent.
    public var consentFreshness: Bool
    /// Local ports for host candidates (for firewalls that open a range); nil: any.
    public var portRange: ClosedRange<UInt16>?
    /// Most candidates offered or accepted per stream and generation.
    public var maxCandidatesPerStream: Int
    /// Received datagrams held per stream when the reader falls behind; older ones are dropped
    /// (late audio is worthless) and counted.
    public var receiveBufferLimit: Int
    /// How long checks may run once both sides have sent all their candidates before the stream
    /// is declared failed. libnice fails a stream by itself only when it had pairs to check and all
    /// of them failed; with no pair at all (the peer's candidates never came, or all were refused)
    /// it would wait forever.
    public var checkDeadline: Duration

    public init(
        stunServer: ICEServerEndpoint? = nil, turnServers: [TURNServer] = [], relayOnly: Bool = false,
        localAddresses: [IPAddress] = [], iceTCP: Bool = false, consentFreshness: Bool = true,
        portRange: ClosedRange<UInt16>? = nil, maxCandidatesPerStream: Int = 16, receiveBufferLimit: Int = 256,
        checkDeadline: Duration = .seconds(15)
    ) {
        self.stunServer = stunServer
        self.turnServers = turnServers
        self.relayOnly = relayOnly
        self.localAddresses = localAddresses
        self.iceTCP = iceTCP
        self.consentFreshness = consentFreshness
        self.portRange = portRange
        self.maxCandidatesPerStream = maxCandidatesPerStream
        self.receiveBufferLimit = receiveBufferLimit
        self.checkDeadline = checkDeadline
    }

    /// Candidate filtering that follows from this configuration. Loopback candidates are allowed
    /// exactly when the node is restricted to loopback addresses.
    public var candidatePolicy: ICECandidatePolicy {
        ICECandidatePolicy(
            allowLoopback: !localAddresses.isEmpty && localAddresses.allSatisfy(\.isLoopback), allowTCP: iceTCP,
            relayOnly: relayOnly, maxCandidatesPerStream: maxCandidatesPerStream)
    }

    /// Refuses configurations that cannot work, with the reason.
    public func validate() throws(ICEError) {
        if relayOnly && turnServers.isEmpty {
            throw ICEError(.invalidConfiguration, "relay-only mode needs at least one TURN server")
        }
        if turnServers.count > 8 {
            throw ICEError(.invalidConfiguration, "libnice accepts at most 8 TURN servers, got \(turnServers.count)")
        }
        if let bad = localAddresses.first(where: { $0.isUnspecified || $0.isMulticast }) {
            throw ICEError(.invalidConfiguration, "\(bad) cannot be a local address")
        }
        if let portRange, portRange.lowerBound == 0 {
            throw ICEError(.invalidConfiguration, "a port range starts at 1 or above")
        }
        guard (1...64).contains(maxCandidatesPerStream) else {
            throw ICEError(.invalidConfiguration, "maxCandidatesPerStream must be 1...64")
        }
        guard checkDeadline > .zero else {
            throw ICEError(.invalidConfiguration, "checkDeadline must be positive")
        }
        guard receiveBufferLimit >= 1 else {
            throw ICEError(.invalidConfiguration, "receiveBufferLimit must be at least 1")
        }
    }
}

/// A server's IP address and port. libnice takes address literals only; resolve host names first.
public struct ICEServerEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `203.0.113.10:3478` or `[2001:db8::1]:3478`; a missing port means `defaultPort`.
    public init(_ text: String, defaultPort: UInt16 = 3478) throws(ICEError) {
        let host: Substring
        var portText: Substring?
        if let (splitHost, splitPort) = HostPortText.split(text) {
            (host, portText) = (splitHost, splitPort)
        } else if !text.hasPrefix("[") {
            host = Substring(text)  // an IPv6 address without brackets and without a port
        } else {
            throw ICEError(.invalidConfiguration, "bad server address \(text)")
        }
        guard let address = IPAddress(host) else {
            throw ICEError(
                .invalidConfiguration,
                "server \(text): libnice needs an IP address; resolve host names before configuring")
        }
        var port = defaultPort
        if let portText {
            guard portText.utf8.allSatisfy({ (48...57).contains($0) }), let parsed = UInt16(portText), parsed != 0
            else {
                throw ICEError(.invalidConfiguration, "bad port in server address \(text)")
            }
            port = parsed
        }
        self.init(address: address, port: port)
    }

    public var description: String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}

/// A TURN relay (RFC 5766) and the long-term credentials for it.
public struct TURNServer: Hashable, Sendable, CustomStringConvertible {
    public enum Transport: String, Hashable, Sendable {
        /// RFC 5766 over UDP.
        case udp
        /// RFC 6062 framing over TCP: reaches networks that block UDP.
        case tcp
    }

    public var endpoint: ICEServerEndpoint
    public var transport: Transport
    public var username: String
    /// A secret: never printed.
    public var password: String

    public init(endpoint: ICEServerEndpoint, transport: Transport = .udp, username: String, password: String) {
        self.endpoint = endpoint
        self.transport = transport
        self.username = username
        self.password = password
    }

    /// From an RFC 7065 URL as the rendezvous hands it out: `turn:203.0.113.10:3478?transport=tcp`.
    /// `turns:` (TLS) is refused: libnice does not verify the relay's certificate.
    public init(url: String, username: String, password: String) throws(ICEError) {
        guard url.hasPrefix("turn:") else {
            throw ICEError(.invalidConfiguration, "TURN URL must start with turn: (turns: is not supported)")
        }
        var rest = Substring(url.dropFirst("turn:".count))
        var transport = Transport.udp
        if let question = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: question)...]
            rest = rest[..<question]
            guard query.hasPrefix("transport="), let parsed = Transport(rawValue: String(query.dropFirst(10))) else {
                throw ICEError(.invalidConfiguration, "TURN URL query must be transport=udp or transport=tcp")
            }
            transport = parsed
        }
        self.init(
            endpoint: try ICEServerEndpoint(String(rest)), transport: transport, username: username, password: password)
    }

    public var description: String {
        "turn:\(endpoint)?transport=\(transport.rawValue) (user \(username), password <redacted>)"
    }
}
