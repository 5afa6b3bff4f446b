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

    /// - Parameter name: the thread's name as `top -H`, `perf` and debuggers show it (the kernel
    /// keeps 15 bytes), and for error messages.
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
        Self.setName(of: thread, to: name)
    }

    /// glibc's pthread_setname_np is a GNU extension the Glibc module does not export; it is
    /// looked up once by name.
    private static let setNameFunction: (@convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pthread_setname_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32).self)
    }()

    private static func setName(of thread: pthread_t, to name: String) {
        guard let setName = setNameFunction else { return }
        _ = String(decoding: name.utf8.prefix(15), as: UTF8.self).withCString { setName(thread, $0) }
    }

    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }
}
