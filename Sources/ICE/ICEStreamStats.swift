/// A snapshot of one peer stream.
///
/// Round-trip time is not here: libnice 0.1.21 times its STUN transactions internally but exposes
/// no RTT. Measure it above ICE with an echo in the encrypted session (the NAT lab's `ice-lab`
/// does exactly that: timestamped datagrams echoed by the peer, median of 20).
public struct ICEStreamStats: Sendable, Equatable {
    public var role: ICERole
    /// 0, then +1 per ICE restart.
    public var generation: Int
    public var state: ICEConnectionState
    public var selectedPair: ICECandidatePair?
    public var route: ICERoute? { selectedPair?.route }
    /// From the start of this generation (stream added, or restarted) to the first working pair.
    public var timeToConnected: Duration?
    public var localCandidates: Int
    public var remoteCandidates: Int
    /// Remote candidates refused by the policy or as malformed, this generation.
    public var rejectedRemoteCandidates: Int
    public var traffic: ICETrafficCounts
}

/// Datagrams and bytes each way, since the stream was added (across restarts).
public struct ICETrafficCounts: Sendable, Equatable {
    public var packetsSent: UInt64
    public var bytesSent: UInt64
    public var packetsReceived: UInt64
    public var bytesReceived: UInt64
    /// Datagrams libnice would not send (no working pair yet, or the path broke).
    public var sendFailures: UInt64
    /// Datagrams dropped because the reader of `ICEStream.datagrams` fell behind.
    public var receiveOverflows: UInt64

    public init(
        packetsSent: UInt64 = 0, bytesSent: UInt64 = 0, packetsReceived: UInt64 = 0, bytesReceived: UInt64 = 0,
        sendFailures: UInt64 = 0, receiveOverflows: UInt64 = 0
    ) {
        self.packetsSent = packetsSent
        self.bytesSent = bytesSent
        self.packetsReceived = packetsReceived
        self.bytesReceived = bytesReceived
        self.sendFailures = sendFailures
        self.receiveOverflows = receiveOverflows
    }
}
