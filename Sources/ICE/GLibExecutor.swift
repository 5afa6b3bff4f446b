internal import CNice
internal import CNiceShims
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A private GLib main context iterated by one dedicated thread, exposed as a Swift
/// `SerialExecutor` (as swift-nio exposes its event loops). `ICEAgent` uses it as its executor, so
/// actor code and libnice's signal and receive callbacks all run on this one thread: callbacks can
/// touch actor state directly (`assumeIsolated`), with no locks and no hops.
///
/// Jobs are queued as idle sources on the private context, never with `g_main_context_invoke`,
/// which would run a job inline on a caller that happens to own the context.
public final class GLibExecutor: SerialExecutor, @unchecked Sendable {
    // Safety: `context` and `loop` are GLib objects whose cross-thread use here is documented as
    // thread-safe (g_source_attach, g_main_loop_quit). `loopThread` is written by the loop thread
    // before `init` returns (ordered by the semaphore) and never again; `threadHandle` likewise by
    // `init`.
    let context: OpaquePointer
    private let loop: OpaquePointer
    /// Holds datagram wake-ups back for a consumer that reads once a frame (see `ReceivePacer`).
    public let receivePacer: ReceivePacer
    private var loopThread = pthread_t()
    private var threadHandle = pthread_t()
    private let joined = Mutex(false)

    /// Starts the loop thread. `onThreadStart` runs first on that thread; the NAT lab uses it to
    /// enter a network namespace (`setns` applies per thread), so every socket libnice opens from
    /// this executor lives in that namespace. If it throws, `init` throws the same error.
    public convenience init(name: String = "parley-ice", onThreadStart: (@Sendable () throws -> Void)? = nil) throws {
        try self.init(name: name, receivePacer: ReceivePacer(), onThreadStart: onThreadStart)
    }

    init(name: String, receivePacer: ReceivePacer, onThreadStart: (@Sendable () throws -> Void)? = nil) throws {
        self.receivePacer = receivePacer
        context = g_main_context_new()
        g_main_context_set_poll_func(context, ReceivePacer.pollFunction)
        loop = g_main_loop_new(context, 0)
        let start = ThreadStart(executor: self, name: name, onThreadStart: onThreadStart)
        let box = Unmanaged.passRetained(start)
        var handle = pthread_t()
        let created = pthread_create(
            &handle, nil,
            { argument in
                let start = Unmanaged<ThreadStart>.fromOpaque(argument!).takeRetainedValue()
                start.run()
                return nil
            }, box.toOpaque())
        guard created == 0 else {
            box.release()
            g_main_loop_unref(loop)
            g_main_context_unref(context)
            throw ICEError(.libnice, "could not start the GLib loop thread (pthread error \(created))")
        }
        threadHandle = handle
        start.started.wait()
        if let error = start.startError {
            pthread_join(handle, nil)
            joined.withLock { $0 = true }
            throw error
        }
    }

    /// Hands the loop thread what it needs, and the outcome of `onThreadStart` back.
    private final class ThreadStart: @unchecked Sendable {
        // Safety: `startError` is written by the loop thread before `started.signal()` and read by
        // `init` after `started.wait()`.
        let executor: GLibExecutor
        let name: String
        let onThreadStart: (@Sendable () throws -> Void)?
        let started = DispatchSemaphore(value: 0)
        var startError: (any Error)?

        init(executor: GLibExecutor, name: String, onThreadStart: (@Sendable () throws -> Void)?) {
            self.executor = executor
            self.name = name
            self.onThreadStart = onThreadStart
        }

        func run() {
            let executor = executor
            executor.loopThread = pthread_self()
            parley_set_thread_name(String(name.prefix(15)))
            do {
                try onThreadStart?()
            } catch {
                startError = error
                started.signal()
                return
            }
            started.signal()
            executor.receivePacer.bindToCurrentThread()
            g_main_context_push_thread_default(executor.context)
            g_main_loop_run(executor.loop)
            g_main_context_pop_thread_default(executor.context)
        }
    }

    deinit {
        g_main_loop_unref(loop)
        g_main_context_unref(context)
    }

    // MARK: SerialExecutor

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedSerialExecutor()
        run { job.runSynchronously(on: executor) }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// True on the loop thread: lets libnice callbacks (which run there, outside any task) use
    /// `assumeIsolated` on actors with this executor.
    public func isIsolatingCurrentContext() -> Bool? { isLoopThread }

    public func checkIsolated() {
        precondition(isLoopThread, "expected to run on the GLib loop thread")
    }

    var isLoopThread: Bool { pthread_equal(pthread_self(), loopThread) != 0 }

    // MARK: Plain jobs

    /// Runs `job` on the loop thread after everything queued before it (an idle source at default
    /// priority; GLib dispatches equal-priority sources in the order they were attached).
    func run(_ job: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(JobBox(job)).toOpaque()
        _ = parley_g_context_add_idle(
            context,
            { data in
                Unmanaged<JobBox>.fromOpaque(data!).takeUnretainedValue().job()
                return parley_g_source_remove_value()
            }, box,
            { data in Unmanaged<JobBox>.fromOpaque(data!).release() })
    }

    private final class JobBox {
        let job: @Sendable () -> Void
        init(_ job: @escaping @Sendable () -> Void) { self.job = job }
    }

    /// Runs the jobs queued so far, stops the loop and waits for its thread. Idempotent. Call it only
    /// after the agents on this executor are closed; never from the loop thread itself.
    public func shutdown() {
        precondition(!isLoopThread, "GLibExecutor.shutdown() called from its own loop thread")
        let shouldJoin = joined.withLock { joined in
            defer { joined = true }
            return !joined
        }
        guard shouldJoin else { return }
        let loop = UncheckedPointer(loop)
        run { g_main_loop_quit(loop.pointer) }
        pthread_join(threadHandle, nil)
    }
}

/// A C pointer carried into a job that runs on the loop thread.
struct UncheckedPointer: @unchecked Sendable {
    // Safety: only ever dereferenced by libnice/GLib calls that are thread-safe or that run on the
    // loop thread owning the object.
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
}
