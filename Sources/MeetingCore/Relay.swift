public import ParleyCore
public import ParleyProtocol

/// What this node carries for others (docs/PROTOCOL.md §13.3).
public struct RelayPolicy: Sendable, Hashable {
    /// The members it relays between: those whose links with it are up over their own direct
    /// path and speak version 2. A pair outside this set is refused, so nobody can make it relay
    /// for someone who is not in the meeting with it.
    public var linked: Set<[UInt8]>
    /// At most this many pairs at a time; 0: it never relays (nor fans out, §15.3).
    public var maximumPairs: Int
    /// The members of `linked` whose links speak version 4: whom a fanned-out frame is passed to
    /// (§15.2).
    public var fanOutTargets: Set<[UInt8]>

    public init(linked: Set<[UInt8]> = [], maximumPairs: Int = 0, fanOutTargets: Set<[UInt8]> = []) {
        self.linked = linked
        self.maximumPairs = maximumPairs
        self.fanOutTargets = fanOutTargets.intersection(linked)
    }
}

/// The relay's side of §13 on the data path: which pairs it carries, checked for every packet
/// (`decide`), and the envelopes it forwards over the mesh, rate-limited per sender. A plain
/// value; the daemon holds one behind a lock, the simulator one per node.
public struct RelayTable: Sendable {
    public var policy: RelayPolicy
    /// Pairs (lower key first) and when each last carried a packet.
    private var pairs: [[[UInt8]]: Instant] = [:]
    /// When each asker was last told about each destination (source first): both ends of a
    /// pair ask at once, and each must hear its own refusal or it waits out a relay trial.
    private var refusalsSent: [[[UInt8]]: Instant] = [:]
    private var envelopeBudget: [[UInt8]: TokenBucket] = [:]
    /// The senders whose frames this node fans out (§15.3): when each last sent one, and its
    /// budget of frames.
    private var fanOutSenders: [[UInt8]: (last: Instant, budget: TokenBucket)] = [:]
    /// When each sender was last told that its frames are not passed on.
    private var fanOutRefusalsSent: [[UInt8]: Instant] = [:]
    /// The signed frames each member may make us check (an Ed25519 verification each).
    private var fanDeliveryBudget: [[UInt8]: TokenBucket] = [:]
    /// The time the budgets count from (their clock is nanoseconds since).
    private var origin: Instant?

    /// A pair that carried nothing for this long no longer counts against the limit.
    public static let pairIdle: Duration = .seconds(10)
    /// Envelopes one member may send through this node over the mesh: a burst, then a rate.
    public static let envelopeBurst = 40.0
    /// Past this many, refusals told more than a second ago are forgotten.
    public static let refusalMemoryLimit = 1024
    public static let envelopesPerSecond = 20.0
    /// Fan-out (§15.3): senders at a time, frames per second each (a sender's 10 ms frames and a
    /// little more), and the burst a sender may send at once (a late capture thread catching up).
    public static let maximumFanOutSenders = 2
    public static let fanOutFramesPerSecond = 110.0
    public static let fanOutBurst = 20.0

    /// FAN_DELIVERs one member may make this node verify (§15.2): what two senders at 110 a
    /// second need, with room; beyond it a member makes it spend no more on signatures.
    public static let fanDeliveriesPerSecond = 250.0
    public static let fanDeliveryBurst = 50.0

    /// Whether to check a FAN_DELIVER that `carrier` passed on (before its signature is verified).
    /// (Any member with a session may carry: one whose link is up in its view may not be up in
    /// ours yet, for a round trip. Carriers are peers with sessions, so the budgets stay few.)
    public mutating func acceptFanDelivery(from carrier: [UInt8], at now: Instant) -> Bool {
        let clock = nanoseconds(at: now)
        return Self.take(
            from: &fanDeliveryBudget, carrier, rate: Self.fanDeliveriesPerSecond, burst: Self.fanDeliveryBurst,
            at: clock)
    }

    /// Takes one of `key`'s tokens from `budgets` (a full bucket for a key not there yet).
    private static func take(
        from budgets: inout [[UInt8]: TokenBucket], _ key: [UInt8], rate: Double, burst: Double, at clock: UInt64
    ) -> Bool {
        var budget = budgets[key] ?? TokenBucket(rate: rate, capacity: burst, now: clock)
        defer { budgets[key] = budget }
        return budget.take(now: clock)
    }

    /// `now` on the budgets' clock.
    private mutating func nanoseconds(at now: Instant) -> UInt64 {
        let origin = origin ?? now
        self.origin = origin
        return (now - origin).nanoseconds
    }

    public enum FanOutDecision: Sendable, Equatable {
        /// Pass the frame on to these members (sorted).
        case forward([[UInt8]])
        /// Pass it on to no one; `tell`: answer RELAY_REFUSED (at most once a second per sender).
        case refuse(SessionControl.RelayRefusal, tell: Bool)
    }

    /// Whether to pass on a frame `source` sent as FAN_OUT (its media is played whatever this says).
    /// A sender has a place once a frame of it was passed on, until it sends none for `pairIdle`;
    /// frames over its rate are not passed on, and not refused either (a capture thread catching
    /// up after a stall must not cost the sender its fan-out).
    public mutating func decideFanOut(from source: [UInt8], at now: Instant) -> FanOutDecision {
        let refusal: SessionControl.RelayRefusal?
        let active = fanOutSenders[source].map { now - $0.last < Self.pairIdle } ?? false
        if policy.maximumPairs == 0 {
            refusal = .declines
        } else if !policy.linked.contains(source) {
            refusal = .notLinked
        } else if !active,
            fanOutSenders.count(where: { $0.key != source && now - $0.value.last < Self.pairIdle })
                >= Self.maximumFanOutSenders
        {
            refusal = .busy
        } else {
            let clock = nanoseconds(at: now)
            var budget =
                active
                ? fanOutSenders[source]!.budget
                : TokenBucket(rate: Self.fanOutFramesPerSecond, capacity: Self.fanOutBurst, now: clock)
            let within = budget.take(now: clock)
            fanOutSenders[source] = (now, budget)
            guard within else { return .forward([]) }
            refusal = nil
        }
        guard let refusal else {
            return .forward(policy.fanOutTargets.filter { $0 != source }.sorted { $0.lexicographicallyPrecedes($1) })
        }
        if fanOutRefusalsSent.count >= Self.refusalMemoryLimit {
            fanOutRefusalsSent = fanOutRefusalsSent.filter { now - $0.value < .seconds(1) }
        }
        let tell = fanOutRefusalsSent[source].map { now - $0 >= .seconds(1) } ?? true
        if tell { fanOutRefusalsSent[source] = now }
        return .refuse(refusal, tell: tell)
    }

    public init(policy: RelayPolicy = RelayPolicy()) {
        self.policy = policy
    }

    public enum Decision: Sendable, Equatable {
        case forward
        /// Drop it; `tell`: answer RELAY_REFUSED (at most once a second per asker and destination).
        case refuse(SessionControl.RelayRefusal, tell: Bool)
    }

    /// Whether to carry a datagram from `source` to `destination` now.
    public mutating func decide(
        from source: [UInt8], to destination: [UInt8], at now: Instant
    )
        -> Decision
    {
        let pair = Self.pair(source, destination)
        let refusal: SessionControl.RelayRefusal?
        if policy.maximumPairs == 0 {
            refusal = .declines
        } else if !policy.linked.contains(source) || !policy.linked.contains(destination) || source == destination {
            refusal = .notLinked
        } else if pairs[pair] == nil, activePairs(at: now).count >= policy.maximumPairs {
            refusal = .busy
        } else {
            refusal = nil
        }
        guard let refusal else {
            pairs[pair] = now
            return .forward
        }
        let asked = [source, destination]
        if refusalsSent.count >= Self.refusalMemoryLimit {  // a member may ask toward made-up keys
            refusalsSent = refusalsSent.filter { now - $0.value < .seconds(1) }
        }
        let tell = refusalsSent[asked].map { now - $0 >= .seconds(1) } ?? true
        if tell { refusalsSent[asked] = now }
        return .refuse(refusal, tell: tell)
    }

    /// Whether to pass on an envelope `source` asked this node to forward over the mesh.
    public mutating func acceptEnvelope(from source: [UInt8], at now: Instant) -> Bool {
        guard policy.linked.contains(source) else { return false }
        let clock = nanoseconds(at: now)
        return Self.take(
            from: &envelopeBudget, source, rate: Self.envelopesPerSecond, burst: Self.envelopeBurst, at: clock)
    }

    /// The pairs carried within `pairIdle`, each as (lower key, higher key), sorted.
    public func activePairs(at now: Instant) -> [[[UInt8]]] {
        pairs.filter { now - $0.value < Self.pairIdle }.map(\.key).sorted { $0[0].lexicographicallyPrecedes($1[0]) }
    }

    /// How many refusals are remembered (for tests: the memory stays bounded).
    public var refusalsRemembered: Int { refusalsSent.count }

    /// Forgets pairs and budgets of members no longer linked.
    public mutating func update(_ policy: RelayPolicy) {
        self.policy = policy
        pairs = pairs.filter { policy.linked.contains($0.key[0]) && policy.linked.contains($0.key[1]) }
        envelopeBudget = envelopeBudget.filter { policy.linked.contains($0.key) }
        fanOutSenders = fanOutSenders.filter { policy.linked.contains($0.key) }
        fanDeliveryBudget = fanDeliveryBudget.filter { policy.linked.contains($0.key) }
    }

    static func pair(_ a: [UInt8], _ b: [UInt8]) -> [[UInt8]] {
        a.lexicographicallyPrecedes(b) ? [a, b] : [b, a]
    }
}
