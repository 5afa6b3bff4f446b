internal import CNice
internal import CNiceShims
import Synchronization

/// One libnice agent carrying one peer stream (one component), for one ICE generation.
///
/// Why an agent per stream, although `ICEAgent` is one per node: libnice keeps the ICE role and the
/// tie-breaker per *agent* and flips the whole agent's role on a role conflict (RFC 5245 §7.2.1.1).
/// In a mesh the deterministic rule makes a node controlling towards some peers and controlled
/// towards others, which one agent-wide role cannot express; measured with plain libnice (`Scripts/
/// bench-ice`), 8 nodes with one agent each leave pairs failed or taking seconds, while an agent
/// per pair connects all 28 pairs in ~30 ms. Sockets are per stream in libnice either way, so the
/// extra agents cost only a GObject and its timers each.
///
/// Every method that calls libnice runs on the executor's loop thread (the owning actor's), except
/// `send`, which libnice makes thread-safe.
final class NiceSession: @unchecked Sendable {
    // Safety: `agent` and `streamID` never change. libnice locks each agent internally; all calls
    // other than `nice_agent_send` are made on the loop thread (asserted), which is also the only
    // thread that touches `receiveContext`, `tornDown` and `direct`.
    let agent: OpaquePointer
    let streamID: UInt32
    private let executor: GLibExecutor
    private var receiveContext: Unmanaged<ReceiveContext>?
    private var tornDown = false
    /// The selected socket the poll function reads itself, if any (loop thread only).
    private var direct: DirectSocket?
    /// This generation's local credentials (libnice generates them when the stream is added).
    let localCredentials: ICECredentials

    /// Creates the agent and its stream with Parley's settings and connects every callback; does
    /// not gather yet (`gather()`), so the caller can record the session before candidates flow.
    init(
        configuration: ICEConfiguration, role: ICERole, executor: GLibExecutor, signals: SignalContext,
        receive: ReceiveContext
    ) throws(ICEError) {
        precondition(executor.isLoopThread, "libnice agents are created on their loop thread")
        self.executor = executor
        var options = NICE_AGENT_OPTION_ICE_TRICKLE.rawValue
        if configuration.consentFreshness { options |= NICE_AGENT_OPTION_CONSENT_FRESHNESS.rawValue }
        // No NICE_AGENT_OPTION_REGULAR_NOMINATION: aggressive nomination connects ~3× sooner here.
        guard
            let agent = nice_agent_new_full(
                executor.context, NICE_COMPATIBILITY_RFC5245, NiceAgentOption(rawValue: options))
        else { throw ICEError(.libnice, "libnice could not create an agent") }
        self.agent = agent

        let object = UnsafeMutableRawPointer(agent)
        // libnice turns UPnP on by default, which multicasts SSDP onto the LAN: always off.
        parley_g_object_set_bool(object, "upnp", 0)
        parley_g_object_set_bool(object, "ice-udp", 1)
        parley_g_object_set_bool(object, "ice-tcp", configuration.iceTCP ? 1 : 0)
        // Keepalives become real binding requests, so a dead selected pair is noticed.
        parley_g_object_set_bool(object, "keepalive-conncheck", 1)
        parley_g_object_set_bool(object, "force-relay", configuration.relayOnly ? 1 : 0)
        parley_g_object_set_bool(object, "controlling-mode", role == .controlling ? 1 : 0)
        if let stun = configuration.stunServer {
            parley_g_object_set_string(object, "stun-server", stun.address.description)
            parley_g_object_set_uint(object, "stun-server-port", UInt32(stun.port))
        }
        for address in configuration.localAddresses {
            var niceAddress = NiceAddress()
            nice_address_init(&niceAddress)
            guard nice_address_set_from_string(&niceAddress, address.description) != 0,
                nice_agent_add_local_address(agent, &niceAddress) != 0
            else {
                g_object_unref(object)
                throw ICEError(.invalidConfiguration, "libnice refused local address \(address)")
            }
        }

        // Signals first: candidates can be emitted inside nice_agent_gather_candidates.
        signals.connect(to: agent)

        streamID = nice_agent_add_stream(agent, 1)
        guard streamID != 0 else {
            g_object_unref(object)
            throw ICEError(.libnice, "libnice could not add a stream")
        }
        if let range = configuration.portRange {
            nice_agent_set_port_range(agent, streamID, 1, UInt32(range.lowerBound), UInt32(range.upperBound))
        }
        for server in configuration.turnServers {
            let type = server.transport == .udp ? NICE_RELAY_TYPE_TURN_UDP : NICE_RELAY_TYPE_TURN_TCP
            guard
                nice_agent_set_relay_info(
                    agent, streamID, 1, server.endpoint.address.description, UInt32(server.endpoint.port),
                    server.username, server.password, type) != 0
            else {
                g_object_unref(object)
                throw ICEError(.invalidConfiguration, "libnice refused TURN server \(server.endpoint)")
            }
        }

        var ufrag: UnsafeMutablePointer<CChar>?
        var password: UnsafeMutablePointer<CChar>?
        guard nice_agent_get_local_credentials(agent, streamID, &ufrag, &password) != 0, let ufrag, let password
        else {
            g_object_unref(object)
            throw ICEError(.libnice, "libnice has no local credentials for a new stream")
        }
        defer {
            g_free(ufrag)
            g_free(password)
        }
        do {
            localCredentials = try ICECredentials(ufrag: String(cString: ufrag), password: String(cString: password))
        } catch {
            g_object_unref(object)
            throw error
        }

        // Datagrams are delivered on the loop thread; the context is released in `tearDown`.
        let context = Unmanaged.passRetained(receive)
        guard nice_agent_attach_recv(agent, streamID, 1, executor.context, Self.onDatagram, context.toOpaque()) != 0
        else {
            // Every property is set by now, so `deinit` runs and unrefs the agent.
            context.release()
            tornDown = true
            throw ICEError(.libnice, "libnice could not attach the receiver")
        }
        receiveContext = context
    }

    private static let onDatagram: NiceAgentRecvFunc = { _, _, _, length, buffer, data in
        guard let data, let buffer else { return }
        let context = Unmanaged<ReceiveContext>.fromOpaque(data).takeUnretainedValue()
        // The one copy on the receive path: libnice reuses its buffer after this returns.
        context.deliver(UnsafeRawBufferPointer(start: buffer, count: Int(length)))
    }

    /// Lets the loop's poll function read the selected pair's socket itself (see `DirectSocket`),
    /// if the pair is plain UDP and not relayed (libnice hands out no other socket); call again
    /// whenever the selected pair changes.
    func receiveDirectly() {
        assertOnLoop()
        stopReceivingDirectly()
        guard !tornDown, let receiveContext,
            let socket = nice_agent_get_selected_socket(agent, streamID, 1)
        else {
            return
        }
        var local: UnsafeMutablePointer<NiceCandidate>?
        var remote: UnsafeMutablePointer<NiceCandidate>?
        guard nice_agent_get_selected_pair(agent, streamID, 1, &local, &remote) != 0, let remote,
            let address = IPAddress(niceAddress: &remote.pointee.addr)
        else {
            g_object_unref(socket)
            return
        }
        let source = DatagramSource(
            address: address, port: UInt16(truncatingIfNeeded: nice_address_get_port(&remote.pointee.addr)))
        let direct = DirectSocket(socket: socket, remote: source, context: receiveContext.takeUnretainedValue())
        executor.receivePacer.direct.add(direct)
        self.direct = direct
    }

    /// Leaves the selected socket to libnice alone; before libnice may close it.
    func stopReceivingDirectly() {
        assertOnLoop()
        guard let direct else { return }
        executor.receivePacer.direct.remove(direct)
        self.direct = nil
    }

    func gather() throws(ICEError) {
        assertOnLoop()
        guard nice_agent_gather_candidates(agent, streamID) != 0 else {
            throw ICEError(.libnice, "libnice could not gather candidates (no usable local address?)")
        }
    }

    func setRemoteCredentials(_ credentials: ICECredentials) throws(ICEError) {
        assertOnLoop()
        guard nice_agent_set_remote_credentials(agent, streamID, credentials.ufrag, credentials.password) != 0 else {
            throw ICEError(.libnice, "libnice refused the remote credentials")
        }
    }

    /// Hands one remote candidate to libnice; false if libnice did not take it.
    func addRemoteCandidate(_ candidate: ICECandidate) -> Bool {
        assertOnLoop()
        let nice = candidate.makeNiceCandidate(stream: streamID)
        defer { nice_candidate_free(nice) }
        let list = g_slist_prepend(nil, nice)
        defer { g_slist_free(list) }
        return nice_agent_set_remote_candidates(agent, streamID, 1, list) == 1
    }

    /// The peer sent end-of-candidates: with trickle ICE, libnice declares failure only after this.
    func remoteGatheringDone() {
        assertOnLoop()
        _ = nice_agent_peer_candidate_gathering_done(agent, streamID)
    }

    /// Sends one datagram on the selected pair. Thread-safe (libnice locks the agent); returns false
    /// when libnice sent nothing (no working pair yet, or a TURN/TCP connection dropped).
    func send(_ datagram: UnsafeRawBufferPointer) -> Bool {
        guard !datagram.isEmpty, datagram.count <= 65_535 else { return false }
        let sent = nice_agent_send(
            agent, streamID, 1, UInt32(datagram.count), datagram.baseAddress!.assumingMemoryBound(to: CChar.self))
        return sent == Int32(datagram.count)
    }

    func boolProperty(_ name: String) -> Bool {
        assertOnLoop()
        return parley_g_object_get_bool(UnsafeMutableRawPointer(agent), name) != 0
    }

    var nominatesAggressively: Bool {
        assertOnLoop()
        // An enum property; g_object_get stores enums as ints.
        return parley_g_object_get_uint(UnsafeMutableRawPointer(agent), "nomination-mode")
            == NICE_NOMINATION_MODE_AGGRESSIVE.rawValue
    }

    /// Releases TURN allocations (RFC 5766 §7: refresh with lifetime 0) and calls `done` on the
    /// loop thread when libnice is finished. Receiving stops with `tearDown`.
    func close(_ done: @escaping @Sendable () -> Void) {
        assertOnLoop()
        stopReceivingDirectly()  // closing removes the stream, and its sockets with it
        let box = Unmanaged.passRetained(CloseCompletion(done))
        nice_agent_close_async(
            agent,
            { _, _, data in
                Unmanaged<CloseCompletion>.fromOpaque(data!).takeRetainedValue().done()
            }, box.toOpaque())
    }

    private final class CloseCompletion {
        let done: @Sendable () -> Void
        init(_ done: @escaping @Sendable () -> Void) { self.done = done }
    }

    /// Stops receive callbacks and releases their context. Idempotent; loop thread only (no
    /// callback can then be running, and none follows a detach).
    func tearDown() {
        assertOnLoop()
        guard !tornDown else { return }
        tornDown = true
        stopReceivingDirectly()
        _ = nice_agent_attach_recv(agent, streamID, 1, executor.context, nil, nil)
        receiveContext?.release()
        receiveContext = nil
    }

    deinit {
        // The last reference may go on any thread (a sender's); libnice objects are unwound on the
        // loop thread, where no callback for them can be running at the same time.
        let agent = UncheckedPointer(agent)
        let streamID = streamID
        let context = receiveContext.map { UncheckedContext(unmanaged: $0) }
        let alreadyTornDown = tornDown
        let executor = executor
        let direct = direct
        let unwind: @Sendable () -> Void = {
            if let direct { executor.receivePacer.direct.remove(direct) }
            if !alreadyTornDown {
                _ = nice_agent_attach_recv(agent.pointer, streamID, 1, executor.context, nil, nil)
                context?.unmanaged.release()
            }
            // Finalizing the agent disconnects its signal handlers, whose destroy-notifies release
            // the signal contexts.
            g_object_unref(UnsafeMutableRawPointer(agent.pointer))
        }
        if executor.isLoopThread { unwind() } else { executor.run(unwind) }
    }

    private struct UncheckedContext: @unchecked Sendable {
        // Safety: released exactly once, on the loop thread, after the receiver is detached.
        let unmanaged: Unmanaged<ReceiveContext>
    }

    private func assertOnLoop() {
        assert(executor.isLoopThread, "libnice call off the loop thread")
    }
}

// MARK: - Callback contexts

/// Counts live callback contexts, so tests can check every one is released.
final class CallbackLedger: Sendable {
    let live = Atomic<Int>(0)
}

/// The receive callback's context: where datagrams go and what they count. Retained while the
/// receiver is attached (`NiceSession.tearDown` releases it).
final class ReceiveContext: Sendable {
    let sink: AsyncStream<[UInt8]>.Continuation
    let route: DatagramRoute
    let counters: TrafficCounters
    private let ledger: CallbackLedger

    init(
        sink: AsyncStream<[UInt8]>.Continuation, route: DatagramRoute, counters: TrafficCounters,
        ledger: CallbackLedger
    ) {
        self.sink = sink
        self.route = route
        self.counters = counters
        self.ledger = ledger
        ledger.live.add(1, ordering: .relaxed)
    }

    deinit { ledger.live.subtract(1, ordering: .relaxed) }

    func deliver(_ bytes: UnsafeRawBufferPointer) {
        counters.packetsReceived.add(1, ordering: .relaxed)
        counters.bytesReceived.add(UInt64(bytes.count), ordering: .relaxed)
        if let handler = route.handler {
            handler.call(Array(bytes))
        } else if case .dropped = sink.yield(Array(bytes)) {
            counters.receiveOverflows.add(1, ordering: .relaxed)
        }
    }
}

/// Where a stream's datagrams go: its `datagrams` stream, or a handler called as they are
/// received (see `ICEStream.deliverDatagrams`).
final class DatagramRoute: Sendable {
    /// The closure lives in a class: a closure value read out of a generic `Mutex` again and
    /// again gets wrapped in one more reabstraction thunk each time (measured: a chain hundreds
    /// deep after a few seconds of traffic, most of the ICE thread's time).
    final class Handler: Sendable {
        let call: @Sendable ([UInt8]) -> Void
        init(_ call: @escaping @Sendable ([UInt8]) -> Void) { self.call = call }
    }

    private let current = Mutex<Handler?>(nil)

    var handler: Handler? { current.withLock { $0 } }

    func set(_ handler: (@Sendable ([UInt8]) -> Void)?) {
        let boxed = handler.map(Handler.init)
        current.withLock { $0 = boxed }
    }
}

/// The signal handlers' context: which agent, stream and generation a libnice signal is about.
/// Each connected handler holds one reference, dropped by GLib's destroy-notify when the handler is
/// disconnected (at the latest when the libnice agent is finalized).
final class SignalContext: @unchecked Sendable {
    // Safety: `owner` is a weak reference (atomic to load); the other properties are immutable.
    // Signals are emitted on the loop thread, the owner's executor, which `assumeIsolated` checks.
    weak var owner: ICEAgent?
    let stream: ICEStream.ID
    let generation: Int
    private let ledger: CallbackLedger

    init(owner: ICEAgent, stream: ICEStream.ID, generation: Int, ledger: CallbackLedger) {
        self.owner = owner
        self.stream = stream
        self.generation = generation
        self.ledger = ledger
        ledger.live.add(1, ordering: .relaxed)
    }

    deinit { ledger.live.subtract(1, ordering: .relaxed) }

    /// Runs `body` on the owning actor, synchronously: the signal is already on its thread.
    func deliver(_ body: @Sendable (isolated ICEAgent) -> Void) {
        guard let owner else { return }
        owner.assumeIsolated { body($0) }
    }

    func connect(to agent: OpaquePointer) {
        let onCandidate: @convention(c) (OpaquePointer?, UnsafeMutablePointer<NiceCandidate>?, gpointer?) -> Void = {
            _, candidate, data in
            let context = Unmanaged<SignalContext>.fromOpaque(data!).takeUnretainedValue()
            let converted = candidate.flatMap { ICECandidate(nice: $0) }
            context.deliver { $0.localCandidateFound(converted, context: context) }
        }
        let onGatheringDone: @convention(c) (OpaquePointer?, UInt32, gpointer?) -> Void = { _, _, data in
            let context = Unmanaged<SignalContext>.fromOpaque(data!).takeUnretainedValue()
            context.deliver { $0.localGatheringDone(context: context) }
        }
        let onState: @convention(c) (OpaquePointer?, UInt32, UInt32, UInt32, gpointer?) -> Void = {
            _, _, _, state, data in
            let context = Unmanaged<SignalContext>.fromOpaque(data!).takeUnretainedValue()
            context.deliver { $0.componentStateChanged(NiceComponentState(rawValue: state), context: context) }
        }
        let onSelectedPair:
            @convention(c) (
                OpaquePointer?, UInt32, UInt32, UnsafeMutablePointer<NiceCandidate>?,
                UnsafeMutablePointer<NiceCandidate>?,
                gpointer?
            ) -> Void = { _, _, _, local, remote, data in
                let context = Unmanaged<SignalContext>.fromOpaque(data!).takeUnretainedValue()
                guard let local = local.flatMap({ ICECandidate(nice: $0) }),
                    let remote = remote.flatMap({ ICECandidate(nice: $0) })
                else { return }
                context.deliver {
                    $0.selectedPairChanged(ICECandidatePair(local: local, remote: remote), context: context)
                }
            }
        let release: GClosureNotify = { data, _ in Unmanaged<SignalContext>.fromOpaque(data!).release() }
        let handlers: [(String, GCallback)] = [
            ("new-candidate-full", unsafeBitCast(onCandidate, to: GCallback.self)),
            ("candidate-gathering-done", unsafeBitCast(onGatheringDone, to: GCallback.self)),
            ("component-state-changed", unsafeBitCast(onState, to: GCallback.self)),
            ("new-selected-pair-full", unsafeBitCast(onSelectedPair, to: GCallback.self)),
        ]
        for (signal, handler) in handlers {
            let retained = Unmanaged.passRetained(self).toOpaque()
            _ = parley_g_signal_connect(UnsafeMutableRawPointer(agent), signal, handler, retained, release)
        }
    }
}

/// Traffic counters shared by the sending side (any thread) and the receive callback.
final class TrafficCounters: Sendable {
    let packetsSent = Atomic<UInt64>(0)
    let bytesSent = Atomic<UInt64>(0)
    let packetsReceived = Atomic<UInt64>(0)
    let bytesReceived = Atomic<UInt64>(0)
    let sendFailures = Atomic<UInt64>(0)
    let receiveOverflows = Atomic<UInt64>(0)

    var snapshot: ICETrafficCounts {
        ICETrafficCounts(
            packetsSent: packetsSent.load(ordering: .relaxed), bytesSent: bytesSent.load(ordering: .relaxed),
            packetsReceived: packetsReceived.load(ordering: .relaxed),
            bytesReceived: bytesReceived.load(ordering: .relaxed), sendFailures: sendFailures.load(ordering: .relaxed),
            receiveOverflows: receiveOverflows.load(ordering: .relaxed))
    }
}

// MARK: - Candidate conversion

extension ICECandidate {
    /// From a libnice candidate; nil for what a Parley stream never uses (unknown enum values,
    /// unparseable addresses).
    init?(nice pointer: UnsafePointer<NiceCandidate>) {
        var candidate = pointer.pointee
        let kind: Kind
        switch candidate.type {
        case NICE_CANDIDATE_TYPE_HOST: kind = .host
        case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE: kind = .serverReflexive
        case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE: kind = .peerReflexive
        case NICE_CANDIDATE_TYPE_RELAYED: kind = .relayed
        default: return nil
        }
        let transport: Transport
        switch candidate.transport {
        case NICE_CANDIDATE_TRANSPORT_UDP: transport = .udp
        case NICE_CANDIDATE_TRANSPORT_TCP_ACTIVE: transport = .tcp(.active)
        case NICE_CANDIDATE_TRANSPORT_TCP_PASSIVE: transport = .tcp(.passive)
        case NICE_CANDIDATE_TRANSPORT_TCP_SO: transport = .tcp(.so)
        default: return nil
        }
        guard let address = IPAddress(niceAddress: &candidate.addr) else { return nil }
        var relatedAddress: IPAddress?
        var relatedPort: UInt16?
        if kind != .host, let base = IPAddress(niceAddress: &candidate.base_addr) {
            relatedAddress = base
            relatedPort = UInt16(truncatingIfNeeded: nice_address_get_port(&candidate.base_addr))
        }
        self.init(
            foundation: String(cString: parley_nice_candidate_foundation(pointer)),
            component: Int(candidate.component_id), transport: transport, priority: candidate.priority,
            address: address, port: UInt16(truncatingIfNeeded: nice_address_get_port(&candidate.addr)), kind: kind,
            relatedAddress: relatedAddress, relatedPort: relatedPort)
    }

    /// A libnice remote candidate for `stream` (free with nice_candidate_free).
    func makeNiceCandidate(stream: UInt32) -> UnsafeMutablePointer<NiceCandidate> {
        let type: NiceCandidateType =
            switch kind {
            case .host: NICE_CANDIDATE_TYPE_HOST
            case .serverReflexive: NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE
            case .peerReflexive: NICE_CANDIDATE_TYPE_PEER_REFLEXIVE
            case .relayed: NICE_CANDIDATE_TYPE_RELAYED
            }
        let nice = nice_candidate_new(type)!
        nice.pointee.transport =
            switch transport {
            case .udp: NICE_CANDIDATE_TRANSPORT_UDP
            case .tcp(.active): NICE_CANDIDATE_TRANSPORT_TCP_ACTIVE
            case .tcp(.passive): NICE_CANDIDATE_TRANSPORT_TCP_PASSIVE
            case .tcp(.so): NICE_CANDIDATE_TRANSPORT_TCP_SO
            }
        nice_address_set_from_string(&nice.pointee.addr, address.description)
        nice_address_set_port(&nice.pointee.addr, UInt32(port))
        // The base of a remote candidate means nothing to the checks; use the related address when
        // the peer gave a real one, else the candidate's own.
        if let relatedAddress, let relatedPort, !relatedAddress.isUnspecified {
            nice_address_set_from_string(&nice.pointee.base_addr, relatedAddress.description)
            nice_address_set_port(&nice.pointee.base_addr, UInt32(relatedPort))
        } else {
            nice.pointee.base_addr = nice.pointee.addr
        }
        nice.pointee.priority = priority
        nice.pointee.stream_id = stream
        nice.pointee.component_id = 1
        parley_nice_candidate_set_foundation(nice, foundation)
        return nice
    }
}

extension IPAddress {
    /// From a libnice address; nil when it holds no IPv4/IPv6 address.
    init?(niceAddress: UnsafeMutablePointer<NiceAddress>) {
        guard nice_address_is_valid(niceAddress) != 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: 64)
        nice_address_to_string(niceAddress, &buffer)
        self.init(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
}
