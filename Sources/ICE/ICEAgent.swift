internal import CNice
internal import CNiceShims

/// Component states of an ICE stream (libnice's `NiceComponentState`).
public enum ICEComponentState: Sendable, Equatable, CustomStringConvertible {
    case disconnected, gathering, connecting, connected, ready, failed

    init(_ raw: UInt32) {
        switch raw {
        case NICE_COMPONENT_STATE_GATHERING.rawValue: self = .gathering
        case NICE_COMPONENT_STATE_CONNECTING.rawValue: self = .connecting
        case NICE_COMPONENT_STATE_CONNECTED.rawValue: self = .connected
        case NICE_COMPONENT_STATE_READY.rawValue: self = .ready
        case NICE_COMPONENT_STATE_FAILED.rawValue: self = .failed
        default: self = .disconnected
        }
    }

    public var description: String {
        switch self {
        case .disconnected: "disconnected"
        case .gathering: "gathering"
        case .connecting: "connecting"
        case .connected: "connected"
        case .ready: "ready"
        case .failed: "failed"
        }
    }
}

/// What a libnice agent reports, in order, from its loop thread.
public enum ICEEvent: Sendable {
    case gatheringDone(stream: UInt32)
    case stateChanged(stream: UInt32, state: ICEComponentState)
    case received(stream: UInt32, datagram: [UInt8])
}

/// An ICE error with a readable reason.
public struct ICEError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A libnice agent (RFC 5245, UDP only, UPnP off) with one component per stream.
/// Signals and received datagrams arrive on `loop`'s thread and are yielded to `events`.
public final class ICEAgent: @unchecked Sendable {
    // Safety: libnice agents lock internally; every call here is a single libnice call that is
    // documented as thread-safe. Callback contexts are retained by GLib (see `connect`).
    private let agent: OpaquePointer
    private let loop: GLibLoop
    public let events: AsyncStream<ICEEvent>
    private let continuation: AsyncStream<ICEEvent>.Continuation

    /// - Parameters:
    ///   - controlling: the ICE role; exactly one side of a pair must be controlling.
    ///   - localAddresses: restrict host candidates to these addresses (e.g. "127.0.0.1").
    public init(loop: GLibLoop, controlling: Bool, localAddresses: [String] = []) throws {
        self.loop = loop
        guard let agent = nice_agent_new(loop.context, NICE_COMPATIBILITY_RFC5245) else {
            throw ICEError("libnice could not create an agent")
        }
        self.agent = agent
        (events, continuation) = AsyncStream.makeStream(of: ICEEvent.self)
        // libnice defaults both UPnP and ICE-TCP to on; UPnP multicasts SSDP to the LAN.
        parley_g_object_set_bool(UnsafeMutableRawPointer(agent), "upnp", 0)
        parley_g_object_set_bool(UnsafeMutableRawPointer(agent), "ice-tcp", 0)
        parley_g_object_set_bool(UnsafeMutableRawPointer(agent), "controlling-mode", controlling ? 1 : 0)
        for text in localAddresses {
            var address = NiceAddress()
            nice_address_init(&address)
            guard nice_address_set_from_string(&address, text) != 0 else {
                throw ICEError("not an IP address: \(text)")
            }
            _ = nice_agent_add_local_address(agent, &address)
        }
        connectSignals()
    }

    deinit {
        continuation.finish()
        g_object_unref(UnsafeMutableRawPointer(agent))
    }

    private var niceAgent: OpaquePointer { agent }

    /// Reads a boolean GObject property of the agent (for checking defaults were overridden).
    public func boolProperty(_ name: String) -> Bool {
        parley_g_object_get_bool(UnsafeMutableRawPointer(agent), name) != 0
    }

    /// Adds a stream with one component and attaches the receive callback. Returns its id.
    public func addStream() throws -> UInt32 {
        let stream = nice_agent_add_stream(niceAgent, 1)
        guard stream != 0 else { throw ICEError("libnice could not add a stream") }
        let context = Unmanaged.passRetained(CallbackContext(continuation: continuation, stream: stream))
        let attached = nice_agent_attach_recv(
            niceAgent, stream, 1, loop.context,
            { _, _, _, length, buffer, data in
                let context = Unmanaged<CallbackContext>.fromOpaque(data!).takeUnretainedValue()
                let bytes = UnsafeRawBufferPointer(start: buffer, count: Int(length))
                context.continuation.yield(.received(stream: context.stream, datagram: Array(bytes)))
            }, context.toOpaque())
        guard attached != 0 else {
            context.release()
            throw ICEError("libnice could not attach a receiver")
        }
        receiveContexts.append(context)
        return stream
    }

    /// Starts gathering local candidates for `stream`; `.gatheringDone` follows.
    public func gatherCandidates(stream: UInt32) throws {
        guard nice_agent_gather_candidates(niceAgent, stream) != 0 else {
            throw ICEError("libnice could not gather candidates for stream \(stream)")
        }
    }

    /// The stream's credentials and candidates as SDP lines (RFC 5245 `a=` attributes).
    public func localDescription() throws -> String {
        guard let sdp = nice_agent_generate_local_sdp(niceAgent) else { throw ICEError("no local description") }
        defer { g_free(sdp) }
        return String(cString: sdp)
    }

    /// Applies the peer's credentials and candidates; checks start at once.
    public func setRemoteDescription(_ sdp: String) throws {
        let added = nice_agent_parse_remote_sdp(niceAgent, sdp)
        guard added > 0 else { throw ICEError("the remote description had no usable candidates (\(added))") }
    }

    /// Sends one datagram on the stream's selected pair. Returns false when nothing was sent.
    @discardableResult
    public func send(_ datagram: [UInt8], stream: UInt32) -> Bool {
        datagram.withUnsafeBytes { bytes in
            nice_agent_send(
                niceAgent, stream, 1, UInt32(bytes.count), bytes.baseAddress?.assumingMemoryBound(to: CChar.self))
                == Int32(bytes.count)
        }
    }

    // MARK: Signals

    /// Owned by GLib: retained when a handler is connected, released by its destroy-notify.
    private final class CallbackContext {
        let continuation: AsyncStream<ICEEvent>.Continuation
        let stream: UInt32
        init(continuation: AsyncStream<ICEEvent>.Continuation, stream: UInt32) {
            self.continuation = continuation
            self.stream = stream
        }
    }

    /// Receive contexts live as long as the agent (libnice has no destroy-notify for them).
    private var receiveContexts: [Unmanaged<CallbackContext>] = []

    private func connectSignals() {
        let release: GClosureNotify = { data, _ in Unmanaged<CallbackContext>.fromOpaque(data!).release() }
        let gatheringDone: @convention(c) (UnsafeMutableRawPointer?, UInt32, UnsafeMutableRawPointer?) -> Void = {
            _, stream, data in
            Unmanaged<CallbackContext>.fromOpaque(data!).takeUnretainedValue().continuation.yield(
                .gatheringDone(stream: stream))
        }
        let stateChanged:
            @convention(c) (UnsafeMutableRawPointer?, UInt32, UInt32, UInt32, UnsafeMutableRawPointer?) -> Void = {
                _, stream, _, state, data in
                Unmanaged<CallbackContext>.fromOpaque(data!).takeUnretainedValue().continuation.yield(
                    .stateChanged(stream: stream, state: ICEComponentState(state)))
            }
        for (signal, handler) in [
            ("candidate-gathering-done", unsafeBitCast(gatheringDone, to: GCallback.self)),
            ("component-state-changed", unsafeBitCast(stateChanged, to: GCallback.self)),
        ] {
            let context = Unmanaged.passRetained(CallbackContext(continuation: continuation, stream: 0))
            _ = parley_g_signal_connect(UnsafeMutableRawPointer(agent), signal, handler, context.toOpaque(), release)
        }
    }

    /// Detaches receivers and releases their contexts; call before dropping the agent.
    public func close() {
        for (index, context) in receiveContexts.enumerated() {
            _ = nice_agent_attach_recv(niceAgent, UInt32(index + 1), 1, nil, nil, nil)
            context.release()
        }
        receiveContexts.removeAll()
        continuation.finish()
    }
}
