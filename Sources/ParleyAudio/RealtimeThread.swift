#if canImport(Glibc)
import Glibc
#endif

/// A dedicated OS thread for an audio loop, joined on `join()`. The body is handed over with an
/// explicitly owned context (retained for the thread, released when it ends).
final class RealtimeThread {
    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    private var thread = pthread_t()
    private var joined = false

    /// - Parameter name: for error messages.
    init(name: String, body: @escaping @Sendable () -> Void) throws(AudioEngineError) {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        let status = pthread_create(
            &thread, nil,
            { context in
                Unmanaged<Body>.fromOpaque(context!).takeRetainedValue().run()
                return nil
            }, context)
        guard status == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw AudioEngineError("cannot start the \(name) thread: \(String(cString: strerror(status)))")
        }
    }

    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }
}
