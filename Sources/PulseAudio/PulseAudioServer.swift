internal import CPulse

/// One source or sink of a PulseAudio (or PipeWire) server.
public struct PulseAudioDevice: Sendable, Hashable {
    public var name: String
    public var description: String
    /// For a source: the sink whose monitor it is (what plays there), else nil.
    public var monitorOf: String?
}

/// What the server has: its sources and sinks and its defaults.
public struct PulseAudioDeviceList: Sendable, Hashable {
    public var sources: [PulseAudioDevice] = []
    public var sinks: [PulseAudioDevice] = []
    public var defaultSource: String?
    public var defaultSink: String?
}

/// Questions to the sound server beyond a stream (libpulse's asynchronous API, driven to
/// completion on the calling thread: each call blocks for one round trip, at most `limit`).
public enum PulseAudioServer {
    /// Lists the sources and sinks and the defaults.
    /// - Parameter server: nil for the default (`$PULSE_SERVER`, then the session's server).
    public static func devices(
        server: String? = nil, limit: Duration = .seconds(2)
    ) throws(PulseAudioError)
        -> PulseAudioDeviceList
    {
        let query = try Query(server: server, limit: limit)
        let collected = Collected()
        let context = Unmanaged.passRetained(collected)
        defer { context.release() }
        let pointer = context.toOpaque()
        collected.pending = 3
        query.track(
            pa_context_get_server_info(
                query.context,
                { _, info, userdata in
                    let collected = Unmanaged<Collected>.fromOpaque(userdata!).takeUnretainedValue()
                    if let info {
                        collected.list.defaultSink = info.pointee.default_sink_name.map { String(cString: $0) }
                        collected.list.defaultSource = info.pointee.default_source_name.map { String(cString: $0) }
                    }
                    collected.pending -= 1
                }, pointer))
        query.track(
            pa_context_get_sink_info_list(
                query.context,
                { _, info, last, userdata in
                    Collected.item(
                        userdata, sink: true,
                        last == 0 ? info.map { ($0.pointee.name, $0.pointee.description, nil) } : nil)
                }, pointer))
        query.track(
            pa_context_get_source_info_list(
                query.context,
                { _, info, last, userdata in
                    Collected.item(
                        userdata, sink: false,
                        last == 0
                            ? info.map { ($0.pointee.name, $0.pointee.description, $0.pointee.monitor_of_sink_name) }
                            : nil)
                }, pointer))
        try query.run(until: { collected.pending <= 0 }, doing: "list devices")
        return collected.list
    }

    /// What the callbacks fill in (on the calling thread: the main loop runs there).
    private final class Collected {
        var list = PulseAudioDeviceList()
        var pending = 0

        /// One answer of a sink or source list (a monitor source names its sink), or its end (nil).
        static func item(
            _ userdata: UnsafeMutableRawPointer?, sink: Bool,
            _ item: (name: UnsafePointer<CChar>?, description: UnsafePointer<CChar>?, monitorOf: UnsafePointer<CChar>?)?
        ) {
            let collected = Unmanaged<Collected>.fromOpaque(userdata!).takeUnretainedValue()
            guard let item, let name = item.name else {
                collected.pending -= 1
                return
            }
            let device = PulseAudioDevice(
                name: String(cString: name), description: item.description.map { String(cString: $0) } ?? "",
                monitorOf: item.monitorOf.map { String(cString: $0) })
            if sink {
                collected.list.sinks.append(device)
            } else {
                collected.list.sources.append(device)
            }
        }
    }

    /// A main loop and a connected context, freed on deinit.
    private final class Query {
        let mainloop: OpaquePointer
        let context: OpaquePointer
        let deadline: ContinuousClock.Instant
        var operations: [OpaquePointer] = []

        init(server: String?, limit: Duration) throws(PulseAudioError) {
            deadline = .now + limit
            guard let mainloop = pa_mainloop_new() else {
                throw PulseAudioError(code: nil, context: "cannot create a main loop")
            }
            guard let context = pa_context_new(pa_mainloop_get_api(mainloop), "Parley") else {
                pa_mainloop_free(mainloop)
                throw PulseAudioError(code: nil, context: "cannot create a context")
            }
            self.mainloop = mainloop
            self.context = context
            let serverName = server ?? "the default server"
            guard pa_context_connect(context, server, PA_CONTEXT_NOAUTOSPAWN, nil) >= 0 else {
                throw PulseAudioError(code: pa_context_errno(context), context: "cannot connect to \(serverName)")
            }
            try run(
                until: {
                    let state = pa_context_get_state(context)
                    if state == PA_CONTEXT_FAILED || state == PA_CONTEXT_TERMINATED { throw Failed() }
                    return state == PA_CONTEXT_READY
                }, doing: "connect to \(serverName)")
        }

        deinit {
            for operation in operations { pa_operation_unref(operation) }
            pa_context_disconnect(context)
            pa_context_unref(context)
            pa_mainloop_free(mainloop)
        }

        struct Failed: Error {}

        func track(_ operation: OpaquePointer?) {
            if let operation { operations.append(operation) }
        }

        /// Runs the main loop until `done`, the context fails, or the deadline passes.
        func run(until done: () throws -> Bool, doing what: String) throws(PulseAudioError) {
            while true {
                do {
                    if try done() { return }
                } catch {
                    throw PulseAudioError(code: pa_context_errno(context), context: "cannot \(what)")
                }
                let left = deadline - .now
                guard left > .zero else { throw PulseAudioError(code: nil, context: "cannot \(what): no answer") }
                let microseconds = Int32(
                    clamping: left.components.seconds * 1_000_000 + left.components.attoseconds / 1_000_000_000_000)
                guard pa_mainloop_prepare(mainloop, microseconds) >= 0, pa_mainloop_poll(mainloop) >= 0,
                    pa_mainloop_dispatch(mainloop) >= 0
                else {
                    throw PulseAudioError(code: pa_context_errno(context), context: "cannot \(what)")
                }
                if pa_context_get_state(context) == PA_CONTEXT_FAILED {
                    throw PulseAudioError(code: pa_context_errno(context), context: "cannot \(what)")
                }
            }
        }
    }
}
