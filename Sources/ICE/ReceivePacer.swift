internal import CNice
internal import CNiceShims
import Dispatch
import ParleyCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Batches the loop thread's datagram wake-ups to a consumer's clock.
///
/// libnice reads each stream's socket from a GLib source on the loop thread, so every datagram
/// that arrives while the thread sleeps wakes it: in a meeting where 7 peers send 50 packets a
/// second each, 350 wake-ups a second, each costing more in context switches than the datagram's
/// own work. Yet media is only used when the consumer (the playback thread, which mixes once a
/// frame) reads it. So the sockets that carry a steady stream (datagrams in every consumer frame
/// for a while), once there are several of them, are left out of the loop's poll between frames,
/// and read in one wake-up when the consumer asks, just before it mixes: `collect()` returns once
/// they are delivered. Everything else goes on as it comes: GLib's timers and jobs (STUN checks,
/// keepalives, the agents' work), and every socket that is not steady yet, so a new peer's checks
/// and handshake, or a stream restarted on a new socket, never wait for a frame. One or two steady
/// sockets (a 1:1 call, one speaker), or no consumer: nothing is held.
///
/// It works as the context's poll function (`g_main_context_set_poll_func`), so libnice's own
/// receive path, STUN handling included, is unchanged: only when the thread looks at the sockets.
/// Being the poll function, it also reads ready streams' selected sockets itself, without a GLib
/// iteration per datagram (`DirectSocket`), whether it holds them back or not.
public final class ReceivePacer: Sendable {
    /// How long `collect()` waits for the loop thread at most: a consumer on an audio clock must
    /// not miss its device's deadline for a loop thread that the machine is slow to schedule (what
    /// was not read by then is read a frame later).
    static let collectTimeout = DispatchTimeInterval.microseconds(2000)

    private let clock = MonotonicClock()
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
    /// Ready streams' selected sockets, which the poll function reads itself (see `DirectSocket`).
    let direct = DirectSockets()

    // Safety: everything below is touched only by the loop thread, from `poll`.
    private nonisolated(unsafe) var policy: ReceivePacingPolicy
    private nonisolated(unsafe) var draining = false
    private nonisolated(unsafe) var drainRequestedUpTo: UInt64 = 0
    private nonisolated(unsafe) var descriptors = DescriptorKinds()
    private nonisolated(unsafe) var scratch = UnsafeMutableBufferPointer<pollfd>.allocate(capacity: 16)

    /// - Parameters:
    ///   - consumerGoneAfter: a consumer that has not asked for this long has stopped (its device
    ///     closed, or it hangs): every socket is watched again.
    ///   - steadyTicks, steadySocketsToPace: see `ReceivePacingPolicy` (tests make them small).
    init(
        consumerGoneAfter: Duration = .milliseconds(60), steadyTicks: Int = ReceivePacingPolicy.defaultSteadyTicks,
        steadySocketsToPace: Int = ReceivePacingPolicy.defaultSteadySocketsToPace
    ) throws(ICEError) {
        policy = ReceivePacingPolicy(
            consumerGoneAfter: consumerGoneAfter, steadyTicks: steadyTicks, steadySocketsToPace: steadySocketsToPace)
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
        consumerLastTick.store(clock.now(), ordering: .releasing)
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

    /// The loop thread's poll: GLib's descriptors, with the steady sockets left out while the
    /// policy paces them, and the consumer's request descriptor. The direct sockets' datagrams are
    /// read here (`DirectSockets.read`); when they were all a poll found, it polls again, for what
    /// is left of GLib's timeout, without a GLib iteration in between.
    fileprivate func poll(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeout: Int32) -> Int32 {
        let deadline = timeout > 0 ? clock.now() + UInt64(timeout) * 1_000_000 : 0
        var wait = timeout
        while true {
            if let ready = pollOnce(records, count, wait) { return ready }
            guard timeout != 0 else { return 0 }
            if timeout > 0 {
                let now = clock.now()
                guard now < deadline else { return 0 }
                wait = Int32((deadline - now + 999_999) / 1_000_000)
            }
        }
    }

    /// One poll; nil when it found datagrams on direct sockets only, and read them.
    private func pollOnce(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeout: Int32) -> Int32? {
        let tick = consumerTicks.load(ordering: .acquiring)
        if draining {
            let result = Glibc.poll(records, nfds_t(count), 0)
            if noteDatagrams(records, count, tick: tick) > 0 { return forGLib(records, count, polled: result) }
            draining = false
            completed.store(drainRequestedUpTo, ordering: .releasing)
            completion.signal()
            if result != 0 { return result }
        }
        // The consumer's tick before the clock: read the other way round, a tick stored in between
        // would be later than `now`, and the consumer would look long gone.
        let lastTick = consumerLastTick.load(ordering: .acquiring)
        let now = clock.now()
        let paced = pacedSockets(records, count, tick: tick, lastTick: lastTick, now: now)
        deferring.store(paced > 0, ordering: .releasing)
        if scratch.count < count + 1 {
            scratch.deallocate()
            scratch = .allocate(capacity: (count + 1) * 2)
        }
        for index in 0..<count {
            var record = records[index]
            record.revents = 0
            if paced > 0, isSteadySocket(record.fd, tick: tick) { record.fd = -1 }
            scratch[index] = record
        }
        scratch[count] = pollfd(fd: requestFD, events: Int16(POLLIN), revents: 0)
        var wait = timeout
        if paced > 0 {
            let left = policy.millisecondsUntilConsumerGone(lastTick: lastTick, now: now)
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
            let drained = Glibc.poll(records, nfds_t(count), 0)
            if noteDatagrams(records, count, tick: tick) > 0 { drains.add(1, ordering: .relaxed) }
            return forGLib(records, count, polled: drained)
        }
        // Said before the datagrams are dispatched: whoever sees them delivered and asks next
        // knows the loop holds that socket back from its next poll on.
        if noteDatagrams(records, count, tick: tick) > 0,
            pacedSockets(records, count, tick: tick, lastTick: lastTick, now: now) > 0
        {
            deferring.store(true, ordering: .releasing)
        }
        return forGLib(records, count, polled: result)
    }

    /// What a poll that found `polled` of `records` ready leaves to GLib once the direct sockets
    /// are read: how many are still ready, or nil if none is left of some.
    private func forGLib(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, polled: Int32) -> Int32? {
        guard polled > 0 else { return polled }
        let ready = direct.read(records, count)
        return ready > 0 ? ready : nil
    }

    /// Tells the policy which sockets have datagrams; returns how many.
    @discardableResult
    private func noteDatagrams(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, tick: UInt64) -> Int {
        var ready = 0
        for index in 0..<count where records[index].revents != 0 && isSocket(records[index].fd) {
            policy.datagrams(on: records[index].fd, tick: tick)
            ready += 1
        }
        return ready
    }

    /// How many of the sockets to leave out of the poll until the consumer asks: the steady ones,
    /// if there are enough of them and the consumer still asks; otherwise 0.
    private func pacedSockets(
        _ records: UnsafeMutablePointer<pollfd>, _ count: Int, tick: UInt64, lastTick: UInt64, now: UInt64
    ) -> Int {
        guard policy.consumerActive(lastTick: lastTick, now: now) else { return 0 }
        var steady = 0
        for index in 0..<count where isSteadySocket(records[index].fd, tick: tick) {
            steady += 1
        }
        return steady < policy.steadySocketsToPace ? 0 : steady
    }

    private func isSocket(_ fd: Int32) -> Bool { descriptors.isSocket(fd) }

    private func isSteadySocket(_ fd: Int32, tick: UInt64) -> Bool {
        isSocket(fd) && policy.isSteady(fd, tick: tick)
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

/// Which sockets the loop thread leaves unwatched between consumer frames (pure; the
/// `ReceivePacer` applies it). Time is counted in consumer ticks (one `collect()` a frame).
struct ReceivePacingPolicy {
    /// Frames in a row with datagrams after which a socket is steady: 200 ms at 20 ms frames, longer
    /// than a link takes from its first check to media, so connecting is never held back.
    static let defaultSteadyTicks = 10
    /// Steady sockets it takes to pace them: with one or two, asking costs the consumer as many
    /// wake-ups as it saves the loop.
    static let defaultSteadySocketsToPace = 3
    /// Frames without datagrams that a steady socket may skip (a sender whose device hands it two
    /// frames at once, 20 ms packets on a 10 ms consumer frame) before it is not steady any more.
    static let allowedGap: UInt64 = 2

    let consumerGoneAfter: UInt64
    let steadyTicks: Int
    let steadySocketsToPace: Int
    /// Per descriptor number (below `tracked`): the tick of its last datagrams and its run of
    /// frames with datagrams (0: none yet).
    private var lastTicks: [UInt64]
    private var runs: [UInt16]
    static let tracked = 1024

    init(
        consumerGoneAfter: Duration, steadyTicks: Int = defaultSteadyTicks,
        steadySocketsToPace: Int = defaultSteadySocketsToPace
    ) {
        let (seconds, attoseconds) = consumerGoneAfter.components
        self.consumerGoneAfter = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
        self.steadyTicks = steadyTicks
        self.steadySocketsToPace = steadySocketsToPace
        lastTicks = Array(repeating: 0, count: Self.tracked)
        runs = Array(repeating: 0, count: Self.tracked)
    }

    /// Datagrams arrived on `fd` during consumer tick `tick`.
    mutating func datagrams(on fd: Int32, tick: UInt64) {
        guard fd >= 0, Int(fd) < Self.tracked else { return }
        let index = Int(fd)
        if runs[index] == 0 || tick &- lastTicks[index] > Self.allowedGap {
            runs[index] = 1
        } else if tick != lastTicks[index], runs[index] < UInt16.max {
            runs[index] += 1
        }
        lastTicks[index] = tick
    }

    /// Whether `fd` carries a steady stream at tick `tick` (one that stops is not, within
    /// `allowedGap` frames: it is watched again).
    func isSteady(_ fd: Int32, tick: UInt64) -> Bool {
        guard fd >= 0, Int(fd) < Self.tracked else { return false }
        let index = Int(fd)
        return runs[index] >= steadyTicks && tick &- lastTicks[index] <= Self.allowedGap
    }

    func consumerActive(lastTick: UInt64, now: UInt64) -> Bool {
        lastTick != 0 && (now <= lastTick || now - lastTick < consumerGoneAfter)
    }

    /// How long a paced loop may wait before it must look at the consumer again (ms, rounded up).
    func millisecondsUntilConsumerGone(lastTick: UInt64, now: UInt64) -> Int32 {
        let gone = lastTick &+ consumerGoneAfter
        guard gone > now else { return 0 }
        return Int32(min((gone - now + 999_999) / 1_000_000, UInt64(Int32.max)))
    }
}
