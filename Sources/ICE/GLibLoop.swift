internal import CNice
internal import CNiceShims

#if canImport(Glibc)
import Glibc
#endif

/// A private GLib main context iterated by one dedicated thread. libnice emits its signals and
/// receive callbacks on this thread; work is queued onto it as idle sources on the private
/// context (not `g_main_context_invoke`, which may run the job inline on the caller's thread).
public final class GLibLoop: @unchecked Sendable {
    // Safety: `context` and `loop` are GLib objects whose use across threads GLib documents as
    // safe (g_source_attach, g_main_loop_quit); `thread` is written once in init and joined once.
    let context: OpaquePointer
    private let loop: OpaquePointer
    private var thread: pthread_t? = nil

    public init(name: String = "parley-glib") {
        context = g_main_context_new()
        loop = g_main_loop_new(context, 0)
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let result = pthread_create(
            &thread, nil,
            { argument in
                let loop = Unmanaged<GLibLoop>.fromOpaque(argument!).takeRetainedValue()
                g_main_context_push_thread_default(loop.context)
                g_main_loop_run(loop.loop)
                g_main_context_pop_thread_default(loop.context)
                return nil
            }, box.toOpaque())
        precondition(result == 0, "could not start the GLib loop thread: error \(result)")
        self.thread = thread
        _ = name
    }

    /// Runs `job` on the loop thread, after everything queued before it.
    public func execute(_ job: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(JobBox(job)).toOpaque()
        _ = parley_g_context_add_idle(
            context,
            { data in
                Unmanaged<JobBox>.fromOpaque(data!).takeUnretainedValue().job()
                return parley_g_source_remove_value()
            }, box,
            { data in Unmanaged<JobBox>.fromOpaque(data!).release() })
    }

    /// Stops the loop and waits for its thread to finish. Idempotent.
    public func stop() {
        guard let thread else { return }
        self.thread = nil
        execute { [self] in g_main_loop_quit(self.loop) }
        pthread_join(thread, nil)
    }

    deinit {
        // The loop thread holds a reference while running, so deinit only runs after it ended.
        g_main_loop_unref(loop)
        g_main_context_unref(context)
    }

    private final class JobBox {
        let job: @Sendable () -> Void
        init(_ job: @escaping @Sendable () -> Void) { self.job = job }
    }
}
