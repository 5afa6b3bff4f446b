import ParleyTestSupport
import Synchronization
import Testing

@testable import ICE

/// An actor that runs on a GLibExecutor, like ICEAgent.
private actor LoopBound {
    let executor: GLibExecutor
    var order: [Int] = []
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    init(executor: GLibExecutor) { self.executor = executor }

    func append(_ value: Int) -> Bool {
        order.append(value)
        return executor.isLoopThread
    }
}

private struct StartFailure: Error {}

@Suite("GLib loop thread as a Swift SerialExecutor")
struct GLibExecutorTests {
    @Test func actorJobsRunOnTheLoopThreadInOrder() async throws {
        let executor = try GLibExecutor(name: "executor-test")
        defer { executor.shutdown() }
        let actor = LoopBound(executor: executor)
        #expect(!executor.isLoopThread)
        var onLoop: [Bool] = []
        for value in 0..<200 { onLoop.append(await actor.append(value)) }
        #expect(onLoop.allSatisfy { $0 })
        #expect(await actor.order == Array(0..<200))
    }

    @Test func plainJobsRunFIFOAndAssumeIsolatedWorksThere() async throws {
        let executor = try GLibExecutor(name: "executor-test")
        defer { executor.shutdown() }
        let actor = LoopBound(executor: executor)
        let seen = Mutex<[Int]>([])
        try await withTimeout(.seconds(10), "100 idle-source jobs") {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                for value in 0..<100 {
                    executor.run {
                        // What a libnice callback does: it is not in a task, but on the actor's thread.
                        actor.assumeIsolated { _ in seen.withLock { $0.append(value) } }
                        if value == 99 { done.resume() }
                    }
                }
            }
        }
        #expect(seen.withLock { $0 } == Array(0..<100))
    }

    @Test func threadStartErrorsReachTheCaller() {
        #expect(throws: StartFailure.self) { try GLibExecutor(onThreadStart: { throw StartFailure() }) }
    }

    @Test func shutdownIsIdempotent() throws {
        let executor = try GLibExecutor()
        executor.shutdown()
        executor.shutdown()
    }
}
