internal import CNice
internal import CNiceShims
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Batches the loop thread's datagram wake-ups to a consumer's clock.
///
/// libnice reads each stream's socket from a GLib source on the loop thread, so every datagram
/// that arrives while the thread sleeps wakes it: in a meeting where 7 peers send 50 packets a
/// second each, 350 wake-ups a second, each costing more in context switches than the datagram's
/// own work. Yet what arrives is only used when the consumer (the playback thread, which mixes once
/// a frame) reads it. So once datagrams come several to a consumer's frame, the loop thread stops
/// watching the sockets (it still runs GLib's timers and jobs, so STUN checks, keepalives and the
/// agents' work go on) and reads them all in one wake-up when the consumer asks, just before it
/// mixes; `collect()` returns once they are delivered. While they come one or two to a frame, or no
/// consumer asks, the sockets are watched as usual and nothing waits.
///
/// It works as the context's poll function (`g_main_context_set_poll_func`), so libnice's own
/// receive path, STUN handling included, is unchanged: only when the thread looks at the sockets.
public final class ReceivePacer: Sendable {
    /// How long `collect()` waits for the loop thread at most: a consumer on an audio clock must
    /// not miss its device's deadline for a loop thread that the machine is slow to schedule (what
    /// was not read by then is read a frame later).
    static let collectTimeout = DispatchTimeInterval.microseconds(2000)

    // Consumer → loop thread.
    private let consumerTicks = Atomic<UInt64>(0)
    private let consumerLastTick = Atomic<UInt64>(0)
    private let requested = Atomic<UInt64>(0)
    /// Written to ask the loop thread for a drain; it polls it beside GLib's own descriptors.
    private let requestFD: Int32
    // Loop thread → consumer.
    private let deferring = Atomic<Bool>(false)
    private let completed = Atomic<UInt64>(0)
    private let completion = DispatchSemaphore(value: 0)
    /// Drains that delivered datagrams (for tests).
    let drains = Atomic<Int>(0)
    /// Whether the loop thread holds datagrams back for the consumer now (for tests).
    var isDeferring: Bool { deferring.load(ordering: .acquiring) }

    // Safety: everything below is touched only by the loop thread, from `poll`.
    private nonisolated(unsafe) var policy: ReceivePacingPolicy
    private nonisolated(unsafe) var draining = false
    private nonisolated(unsafe) var readyInDrain = 0
    private nonisolated(unsafe) var drainRequestedUpTo: UInt64 = 0
    private nonisolated(unsafe) var descriptors = DescriptorKinds()
    private nonisolated(unsafe) var scratch = UnsafeMutableBufferPointer<pollfd>.allocate(capacity: 16)

    /// - Parameter consumerGoneAfter: a consumer that has not asked for this long has stopped (its
    ///   device closed, or it hangs): the sockets are watched again.
    init(consumerGoneAfter: Duration = .milliseconds(60)) throws(ICEError) {
        policy = ReceivePacingPolicy(consumerGoneAfter: consumerGoneAfter)
        requestFD = parley_eventfd()
        guard requestFD >= 0 else {
            scratch.deallocate()
            throw ICEError(.libnice, "could not create an eventfd for the receive pacer (errno \(errno))")
        }
    }

    deinit {
        close(requestFD)
        scratch.deallocate()
    }

    // MARK: Consumer

    /// Delivers every datagram that has arrived and waits for its delivery (at most
    /// `collectTimeout`), if the loop thread held some back for this; otherwise returns at once.
    /// Call it once per consumer frame, just before using what was received, from one thread that
    /// is not the loop thread.
    public func collect() {
        consumerLastTick.store(ReceivePacingPolicy.now(), ordering: .relaxed)
        consumerTicks.add(1, ordering: .releasing)
        guard deferring.load(ordering: .acquiring) else { return }
        let ticket = requested.add(1, ordering: .acquiringAndReleasing).newValue
        var one: UInt64 = 1
        _ = write(requestFD, &one, 8)
        let deadline = DispatchTime.now() + Self.collectTimeout
        while completed.load(ordering: .acquiring) < ticket {
            // A signal left by a drain this consumer stopped waiting for is taken and re-checked.
            if completion.wait(timeout: deadline) == .timedOut { return }
        }
    }

    // MARK: Loop thread

    /// The loop thread's poll: GLib's descriptors, with the datagram sockets left out while the
    /// policy defers them, and the consumer's request descriptor.
    fileprivate func poll(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeout: Int32) -> Int32 {
        if draining {
            let result = Glibc.poll(records, nfds_t(count), 0)
            let ready = readySockets(records, count)
            if ready > 0 {
                readyInDrain += ready
                return result
            }
            finishDrain()
            if result != 0 { return result }
        }
        let now = ReceivePacingPolicy.now()
        if policy.paced, !policy.consumerActive(lastTick: consumerLastTick.load(ordering: .relaxed), now: now) {
            policy.consumerStopped()
            deferring.store(false, ordering: .releasing)
        }
        let hidesSockets = policy.paced
        if scratch.count < count + 1 {
            scratch.deallocate()
            scratch = .allocate(capacity: (count + 1) * 2)
        }
        for index in 0..<count {
            var record = records[index]
            record.revents = 0
            if hidesSockets, descriptors.isSocket(record.fd) { record.fd = -1 }
            scratch[index] = record
        }
        scratch[count] = pollfd(fd: requestFD, events: Int16(POLLIN), revents: 0)
        var wait = timeout
        if hidesSockets {
            let left = policy.millisecondsUntilConsumerGone(
                lastTick: consumerLastTick.load(ordering: .relaxed), now: now)
            wait = timeout < 0 ? left : min(timeout, left)
        }
        let result = Glibc.poll(scratch.baseAddress!, nfds_t(count + 1), wait)
        guard result >= 0 else { return result }  // EINTR and the like: GLib looks at errno
        for index in 0..<count { records[index].revents = scratch[index].revents }
        if scratch[count].revents != 0 {
            var value: UInt64 = 0
            _ = read(requestFD, &value, 8)
            drainRequestedUpTo = requested.load(ordering: .acquiring)
            draining = true
            readyInDrain = 0
            let drained = Glibc.poll(records, nfds_t(count), 0)
            readyInDrain += readySockets(records, count)
            return drained
        }
        if !hidesSockets, readySockets(records, count) > 0 {
            let active = policy.consumerActive(lastTick: consumerLastTick.load(ordering: .relaxed), now: now)
            if policy.wokeForDatagrams(consumerTick: consumerTicks.load(ordering: .acquiring), consumerActive: active) {
                deferring.store(true, ordering: .releasing)
            }
        }
        var ready: Int32 = 0
        for index in 0..<count where records[index].revents != 0 { ready += 1 }
        return ready
    }

    private func finishDrain() {
        draining = false
        if readyInDrain > 0 { drains.add(1, ordering: .relaxed) }
        policy.drained(readySockets: readyInDrain)
        deferring.store(policy.paced, ordering: .releasing)
        completed.store(drainRequestedUpTo, ordering: .releasing)
        completion.signal()
    }

    private func readySockets(_ records: UnsafeMutablePointer<pollfd>, _ count: Int) -> Int {
        var ready = 0
        for index in 0..<count where records[index].revents != 0 && descriptors.isSocket(records[index].fd) {
            ready += 1
        }
        return ready
    }

    /// The loop thread's poll function; finds its pacer in thread-local storage (a GPollFunc has no
    /// user data).
    static let pollFunction: GPollFunc = { records, count, timeout in
        guard let records else { return 0 }
        return records.withMemoryRebound(to: pollfd.self, capacity: Int(count)) { records in
            guard let pacer = pthread_getspecific(pacerKey) else {
                return Glibc.poll(records, nfds_t(count), timeout)
            }
            return Unmanaged<ReceivePacer>.fromOpaque(pacer).takeUnretainedValue().poll(
                records, Int(count), timeout)
        }
    }

    /// Makes `pollFunction` on the calling thread use this pacer (until the thread ends).
    func bindToCurrentThread() {
        pthread_setspecific(pacerKey, Unmanaged.passUnretained(self).toOpaque())
    }
}

private let pacerKey: pthread_key_t = {
    var key = pthread_key_t()
    precondition(pthread_key_create(&key, nil) == 0, "no pthread key for the receive pacer")
    return key
}()

/// Which of the loop's descriptors are sockets (libnice's, to be paced) and which are not (GLib's
/// wake-up eventfd, which must always be watched: it is how jobs and other threads reach the loop).
/// A descriptor's kind is looked up once: in this context a number is only ever reused by another
/// socket of libnice's, the wake-up descriptor lives as long as the context.
private struct DescriptorKinds {
    private var kinds = [UInt8](repeating: 0, count: 1024)  // 0 unknown, 1 socket, 2 other

    mutating func isSocket(_ fd: Int32) -> Bool {
        guard fd >= 0 else { return false }
        if Int(fd) < kinds.count, kinds[Int(fd)] != 0 { return kinds[Int(fd)] == 1 }
        var status = stat()
        let socket = fstat(fd, &status) == 0 && (status.st_mode & S_IFMT) == S_IFSOCK
        if Int(fd) < kinds.count { kinds[Int(fd)] = socket ? 1 : 2 }
        return socket
    }
}

/// When the loop thread stops watching the sockets and when it starts again (pure; the
/// `ReceivePacer` applies it).
struct ReceivePacingPolicy {
    /// Wake-ups for datagrams within one consumer frame that make it pace: one or two a frame (a
    /// 1:1 call, one speaker) cost no more than asking would.
    static let wakeUpsToPace = 3
    /// Sockets with datagrams at a drain below which it stops pacing (the meeting went quiet).
    static let socketsToStayPaced = 2

    let consumerGoneAfter: UInt64
    private(set) var paced = false
    private var wakeUpsTick: UInt64 = .max
    private var wakeUps = 0

    init(consumerGoneAfter: Duration) {
        let (seconds, attoseconds) = consumerGoneAfter.components
        self.consumerGoneAfter = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    /// A wake-up of the loop thread for datagrams while it watches the sockets; true when it now
    /// paces.
    mutating func wokeForDatagrams(consumerTick: UInt64, consumerActive: Bool) -> Bool {
        if consumerTick != wakeUpsTick {
            wakeUpsTick = consumerTick
            wakeUps = 0
        }
        wakeUps += 1
        if consumerActive, wakeUps >= Self.wakeUpsToPace { paced = true }
        return paced
    }

    /// A drain the consumer asked for found datagrams on `readySockets` sockets.
    mutating func drained(readySockets: Int) {
        guard readySockets < Self.socketsToStayPaced else { return }
        paced = false
        wakeUps = 0
    }

    mutating func consumerStopped() {
        paced = false
        wakeUps = 0
    }

    func consumerActive(lastTick: UInt64, now: UInt64) -> Bool {
        lastTick != 0 && now &- lastTick < consumerGoneAfter
    }

    /// How long a paced loop may wait before it must look at the consumer again (ms, rounded up).
    func millisecondsUntilConsumerGone(lastTick: UInt64, now: UInt64) -> Int32 {
        let gone = lastTick &+ consumerGoneAfter
        guard gone > now else { return 0 }
        return Int32(min((gone - now + 999_999) / 1_000_000, UInt64(Int32.max)))
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
