import Synchronization

/// One peer's stream on a node's `ICEAgent`: its events, its received datagrams, and sending.
/// Control (credentials, remote candidates, restart, removal, stats) goes through the agent with
/// `id`. Survives ICE restarts: the same handle carries every generation.
public final class ICEStream: Sendable {
    public struct ID: Hashable, Sendable, CustomStringConvertible {
        let value: UInt64
        public var description: String { "stream-\(value)" }
    }

    public let id: ID
    public let role: ICERole
    /// Candidates to trickle, gathering done, state changes, selected pairs, restarts, in order.
    /// Finishes when the stream is removed or the agent closes. One reader.
    public let events: AsyncStream<ICEStreamEvent>
    /// Datagrams from the peer, in arrival order. Keeps the newest `receiveBufferLimit` when the
    /// reader falls behind. Finishes with `events`. One reader.
    public let datagrams: AsyncStream<[UInt8]>

    let eventSink: AsyncStream<ICEStreamEvent>.Continuation
    let datagramSink: AsyncStream<[UInt8]>.Continuation
    let route = DatagramRoute()
    let counters = TrafficCounters()
    /// The session datagrams go out on: the connected generation (the old one keeps carrying
    /// traffic during a restart until the new one connects), or nil once removed.
    private let sendTarget = Mutex<NiceSession?>(nil)

    init(id: ID, role: ICERole, receiveBufferLimit: Int) {
        self.id = id
        self.role = role
        (events, eventSink) = AsyncStream.makeStream(of: ICEStreamEvent.self)
        (datagrams, datagramSink) = AsyncStream.makeStream(
            of: [UInt8].self, bufferingPolicy: .bufferingNewest(receiveBufferLimit))
    }

    /// Sends one datagram to the peer, from any thread, without copying it (libnice writes it to
    /// the socket, or wraps it for the TURN relay). Returns false when it was not sent: no working
    /// pair yet, the path broke, or the stream was removed.
    @discardableResult
    public func send(_ datagram: UnsafeRawBufferPointer) -> Bool {
        // Take a reference out of the lock; no lock is held across the C call.
        guard let session = sendTarget.withLock({ $0 }), session.send(datagram) else {
            counters.sendFailures.add(1, ordering: .relaxed)
            return false
        }
        counters.packetsSent.add(1, ordering: .relaxed)
        counters.bytesSent.add(UInt64(datagram.count), ordering: .relaxed)
        return true
    }

    @discardableResult
    public func send(_ datagram: [UInt8]) -> Bool {
        datagram.withUnsafeBytes { send($0) }
    }

    /// Hands every datagram from the peer to `handler`, called on the ICE thread as libnice
    /// receives it, instead of `datagrams` (which then stays empty). For a node's hot path: no
    /// task wake-up per packet (at 50 packets per second from each of 7 peers, those wake-ups cost
    /// more than the decryption). The handler must not block: decrypt, hand off, return.
    public func deliverDatagrams(to handler: @escaping @Sendable ([UInt8]) -> Void) {
        route.set(handler)
    }

    /// Datagrams and bytes each way so far (the same counts as `ICEAgent.stats(for:)`), readable
    /// from any thread without a hop to the agent: the node samples them every second for rates.
    public var traffic: ICETrafficCounts { counters.snapshot }

    func setSendTarget(_ session: NiceSession?) {
        sendTarget.withLock { $0 = session }
    }

    func finish() {
        setSendTarget(nil)
        route.set(nil)
        eventSink.finish()
        datagramSink.finish()
    }
}
