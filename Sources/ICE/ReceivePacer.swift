internal import CNice
internal import CNiceShims
import Dispatch
import ParleyCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Receives datagrams on a consumer's clock instead of waking the loop thread for each.
///
/// libnice reads each stream's socket from a GLib source on the loop thread, so every datagram
/// that arrives while the thread sleeps wakes it: in a meeting where 7 peers send 50 packets a
/// second each, 350 wake-ups a second, each costing more in context switches than the datagram's
/// own work. Yet media is only used when the consumer (the playback thread, which mixes once a
/// frame) reads it. Two ways bring the reading to the consumer's frame, both in `collect()`:
/// - A ready stream's selected plain UDP socket the consumer reads itself (`DirectSocket`: media
///   from the selected remote; everything else it leaves to libnice). The loop leaves the socket
///   out of its poll while the consumer owns it, so a 1:1 call wakes no thread per datagram.
/// - The other sockets that carry a steady stream (datagrams in every consumer frame for a while:
///   relayed or TCP paths), once there are several of them, are left out of the loop's poll
///   between frames, and read by the loop in one wake-up when the consumer asks, just before it
///   mixes: `collect()` returns once they are delivered.
///
/// Everything else goes on as it comes: GLib's timers and jobs (STUN checks, keepalives, the
/// agents' work), and every socket that is not steady yet, so a new peer's checks and handshake,
/// or a stream restarted on a new socket, never wait for a frame. One or two steady sockets
/// libnice reads, or no consumer: nothing is held.
///
/// It works as the context's poll function (`g_main_context_set_poll_func`), so libnice's own
/// receive path, STUN handling included, is unchanged: only when the thread looks at the sockets.
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
    /// Ready streams' selected sockets, which the consumer reads itself (see `DirectSocket`).
    let direct = DirectSockets()
    /// Whether streams' selected sockets go to the consumer (tests of the pacing alone turn it off).
    let receivesDirectly: Bool

    // Safety: everything below is touched only by the loop thread, from `poll`.
    private nonisolated(unsafe) var policy: ReceivePacingPolicy
    private nonisolated(unsafe) var draining = false
    private nonisolated(unsafe) var drainRequestedUpTo: UInt64 = 0
    private nonisolated(unsafe) var descriptors = DescriptorKinds()
    private nonisolated(unsafe) var scratch = UnsafeMutableBufferPointer<pollfd>.allocate(capacity: 16)

    /// - Parameters:
    ///   - consumerGoneAfter: a consumer that has not asked for this long has stopped (its device
    ///     closed, or it hangs): every held socket is watched again.
    ///   - readerGoneAfter: the same for the sockets the consumer reads itself (longer: see
    ///     `ReceivePacingPolicy.readerGoneAfter`).
    ///   - steadyTicks, steadySocketsToPace: see `ReceivePacingPolicy` (tests make them small).
    ///   - receivesDirectly: whether the consumer reads ready streams' selected sockets itself.
    init(
        consumerGoneAfter: Duration = .milliseconds(60), readerGoneAfter: Duration = .milliseconds(500),
        steadyTicks: Int = ReceivePacingPolicy.defaultSteadyTicks,
        steadySocketsToPace: Int = ReceivePacingPolicy.defaultSteadySocketsToPace, receivesDirectly: Bool = true
    ) throws(ICEError) {
        self.receivesDirectly = receivesDirectly
        policy = ReceivePacingPolicy(
            consumerGoneAfter: consumerGoneAfter, readerGoneAfter: readerGoneAfter, steadyTicks: steadyTicks,
            steadySocketsToPace: steadySocketsToPace)
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

    /// Delivers the datagrams of the sockets the consumer reads itself, on the calling thread, then
    /// every datagram the loop thread held back for this, waiting for its delivery (at most
    /// `collectTimeout`). Call it once per consumer frame, just before using what was received,
    /// from one thread that is not the loop thread.
    public func collect() {
        consumerLastTick.store(clock.now(), ordering: .releasing)
        consumerTicks.add(1, ordering: .releasing)
        if direct.read() {
            var one: UInt64 = 1
            _ = write(requestFD, &one, 8)  // the loop watches the socket handed back
        }
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

    /// The loop thread's poll: GLib's descriptors, with the consumer's direct sockets left out,
    /// and the steady sockets while the policy paces them, and the consumer's request descriptor.
    fileprivate func poll(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeout: Int32) -> Int32 {
        let tick = consumerTicks.load(ordering: .acquiring)
        // The consumer's time before the clock's: read the other way round, a tick stored in
        // between would be later than `now`.
        let lastTick = consumerLastTick.load(ordering: .acquiring)
        let now = clock.now()
        let consumerActive = policy.consumerActive(lastTick: lastTick, now: now)
        let consumerReads = direct.assign(
            records, count, consumerActive: policy.consumerActive(lastTick: lastTick, now: now, within: .reader))
        if draining {
            let result = pollSockets(records, count, timeout: 0, holdingSteadyAt: nil, requests: false).ready
            if noteDatagrams(records, count, tick: tick) > 0 { return result }
            draining = false
            completed.store(drainRequestedUpTo, ordering: .releasing)
            completion.signal()
            if result != 0 { return result }
        }
        let paced = consumerActive ? pacedSockets(records, count, tick: tick) : 0
        deferring.store(paced > 0, ordering: .releasing)
        var wait = timeout
        func lookAgain(within bound: ReceivePacingPolicy.Bound) {
            let left = policy.millisecondsUntilConsumerGone(lastTick: lastTick, now: now, within: bound)
            wait = wait < 0 ? left : min(wait, left)
        }
        if paced > 0 { lookAgain(within: .pacing) }
        if consumerReads { lookAgain(within: .reader) }
        let (ready, requestArrived) = pollSockets(
            records, count, timeout: wait, holdingSteadyAt: paced > 0 ? tick : nil, requests: true)
        guard ready >= 0 else { return ready }  // EINTR and the like: GLib looks at errno
        if requestArrived {
            var value: UInt64 = 0
            _ = read(requestFD, &value, 8)
            // Without a new drain request the consumer handed a direct socket back, which the
            // next poll watches.
            let upTo = requested.load(ordering: .acquiring)
            if upTo != drainRequestedUpTo {
                drainRequestedUpTo = upTo
                draining = true
                let drained = pollSockets(records, count, timeout: 0, holdingSteadyAt: nil, requests: false).ready
                if noteDatagrams(records, count, tick: tick) > 0 { drains.add(1, ordering: .relaxed) }
                return drained
            }
        }
        // Said before the datagrams are dispatched: whoever sees them delivered and asks next
        // knows the loop holds that socket back from its next poll on.
        if noteDatagrams(records, count, tick: tick) > 0, consumerActive,
            pacedSockets(records, count, tick: tick) > 0
        {
            deferring.store(true, ordering: .releasing)
        }
        return ready
    }

    /// Polls GLib's descriptors (results into `records`), leaving out the consumer's direct
    /// sockets and, with `holdingSteadyAt`, the sockets steady at that tick; with `requests`, the
    /// request descriptor too. Returns how many of GLib's descriptors are ready (negative: poll's
    /// error) and whether a request came.
    private func pollSockets(
        _ records: UnsafeMutablePointer<pollfd>, _ count: Int, timeout: Int32, holdingSteadyAt tick: UInt64?,
        requests: Bool
    ) -> (ready: Int32, requestArrived: Bool) {
        if scratch.count < count + 1 {
            scratch.deallocate()
            scratch = .allocate(capacity: (count + 1) * 2)
        }
        for index in 0..<count {
            var record = records[index]
            record.revents = 0
            if direct.leavesOut(record.fd) { record.fd = -1 }
            if let tick, isSteadySocket(record.fd, tick: tick) { record.fd = -1 }
            scratch[index] = record
        }
        scratch[count] = pollfd(fd: requests ? requestFD : -1, events: Int16(POLLIN), revents: 0)
        let result = Glibc.poll(scratch.baseAddress!, nfds_t(count + 1), timeout)
        guard result >= 0 else { return (result, false) }
        var ready: Int32 = 0
        for index in 0..<count {
            records[index].revents = scratch[index].revents
            if scratch[index].revents != 0 { ready += 1 }
        }
        direct.noteReadable(records, count)
        return (ready, scratch[count].revents != 0)
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

    /// How many of the sockets to leave out of the poll until the consumer asks (while it asks):
    /// the steady ones, if there are enough of them; otherwise 0.
    private func pacedSockets(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, tick: UInt64) -> Int {
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
    /// How long a consumer that reads sockets itself may go without asking before they go back to
    /// libnice. Longer than `consumerGoneAfter`: while the consumer owns a socket, the loop must
    /// wake within this bound to look at it again (at 60 ms, 17 wake-ups a second, a fifth of
    /// what reading the socket itself saved a 1:1 call), and a consumer that stopped plays nothing
    /// that could be late: only session messages wait, once, for up to this long.
    let readerGoneAfter: UInt64
    let steadyTicks: Int
    let steadySocketsToPace: Int
    /// Per descriptor number (below `tracked`): the tick of its last datagrams and its run of
    /// frames with datagrams (0: none yet).
    private var lastTicks: [UInt64]
    private var runs: [UInt16]
    static let tracked = 1024

    init(
        consumerGoneAfter: Duration, readerGoneAfter: Duration = .milliseconds(500),
        steadyTicks: Int = defaultSteadyTicks, steadySocketsToPace: Int = defaultSteadySocketsToPace
    ) {
        func nanoseconds(_ duration: Duration) -> UInt64 {
            let (seconds, attoseconds) = duration.components
            return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
        }
        self.consumerGoneAfter = nanoseconds(consumerGoneAfter)
        self.readerGoneAfter = nanoseconds(readerGoneAfter)
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

    /// Which of the two bounds on a consumer's silence applies.
    enum Bound {
        /// For the sockets the loop holds back for it (`consumerGoneAfter`).
        case pacing
        /// For the sockets it reads itself (`readerGoneAfter`).
        case reader
    }

    private func nanoseconds(_ bound: Bound) -> UInt64 {
        switch bound {
        case .pacing: consumerGoneAfter
        case .reader: readerGoneAfter
        }
    }

    func consumerActive(lastTick: UInt64, now: UInt64, within bound: Bound = .pacing) -> Bool {
        lastTick != 0 && (now <= lastTick || now - lastTick < nanoseconds(bound))
    }

    /// How long a loop that holds sockets for the consumer may wait before it must look at the
    /// consumer again (ms, rounded up).
    func millisecondsUntilConsumerGone(lastTick: UInt64, now: UInt64, within bound: Bound = .pacing) -> Int32 {
        let gone = lastTick &+ nanoseconds(bound)
        guard gone > now else { return 0 }
        return Int32(min((gone - now + 999_999) / 1_000_000, UInt64(Int32.max)))
    }
}
