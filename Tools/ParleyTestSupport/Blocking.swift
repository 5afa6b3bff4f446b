#if canImport(Glibc)
import Glibc
#endif

/// Runs blocking work (a synchronous socket client, waiting for a process) on a thread of its
/// own and awaits its result. Not on Dispatch's global queues: on Linux they share a width-limited
/// thread pool with Swift concurrency, and a blocked worker there stalls unrelated tasks for about
/// a second until libdispatch adds a thread.
public func runBlocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let box = Unmanaged.passRetained(
            BlockingJob {
                continuation.resume(with: Result { try work() })
            })
        var thread = pthread_t()
        let result = pthread_create(
            &thread, nil,
            { argument in
                let job = Unmanaged<BlockingJob>.fromOpaque(argument!).takeRetainedValue()
                job.run()
                return nil
            }, box.toOpaque())
        if result != 0 {
            box.release()
            continuation.resume(throwing: TimeoutError("could not start a thread: error \(result)"))
        } else {
            pthread_detach(thread)
        }
    }
}

private final class BlockingJob: Sendable {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}
