/// The signaling rules of docs/PROTOCOL.md §6.6 as pure decisions, so every case is table-tested
/// and the meeting loop only carries them out.
public enum SignalingRules {
    /// What a node does with an authenticated HELLO.
    public struct HelloDecision: Sendable, Hashable {
        public enum Link: Sendable, Hashable {
            /// No link to this identity (or it was removed): start one at generation 0.
            case start
            /// The peer restarted (new session epoch): end the old link, start a new one.
            case replace
            /// Same epoch and a link exists: only re-address envelopes to the new member id.
            case keep
            /// No protocol version in common: no link; tell the user.
            case incompatible
        }

        public var link: Link
        /// Answer with a unicast HELLO to the sender's member id (§6.6 step 2).
        public var answer: Bool

        public init(link: Link, answer: Bool) {
            self.link = link
            self.answer = answer
        }
    }

    /// What we know about the sender before its HELLO: its epoch and whether a link exists.
    public struct KnownPeer: Sendable, Hashable {
        public var epoch: UInt64
        public var hasLink: Bool
        public init(epoch: UInt64, hasLink: Bool) {
            self.epoch = epoch
            self.hasLink = hasLink
        }
    }

    /// §6.6 steps 2, 3 and 6. Every broadcast HELLO is answered: a broadcast means the sender has
    /// just (re)joined the rendezvous and may have missed our own announcement (after an outage,
    /// members reconnect at different times), and a unicast HELLO is never answered, so answers
    /// cannot loop.
    public static func hello(
        from known: KnownPeer?, epoch: UInt64, isBroadcast: Bool, commonVersion: UInt8?
    ) -> HelloDecision {
        guard commonVersion != nil else { return HelloDecision(link: .incompatible, answer: isBroadcast) }
        let link: HelloDecision.Link
        switch known {
        case nil: link = .start
        case let known? where known.epoch != epoch: link = known.hasLink ? .replace : .start
        case let known?: link = known.hasLink ? .keep : .start
        }
        return HelloDecision(link: link, answer: isBroadcast)
    }

    /// What to do with an ICE message of generation `received` on a link at generation `current`
    /// (§6.6 steps 4–5).
    public enum GenerationDecision: Sendable, Hashable {
        /// For the current generation: apply it.
        case apply
        /// The peer restarted ICE: restart ours at this generation (new credentials, fresh
        /// gathering, announced with ICE_CREDENTIALS), then apply the message if it carries data.
        case restart(to: UInt32)
        /// Another generation's leftovers: ignore.
        case ignore
    }

    /// ICE_CREDENTIALS or ICE_RESTART(`received`): a higher generation restarts us there.
    public static func restartingMessage(generation received: UInt32, current: UInt32) -> GenerationDecision {
        if received > current { return .restart(to: received) }
        return received == current ? .apply : .ignore
    }

    /// ICE_CANDIDATE and ICE_CANDIDATES_DONE belong to exactly one generation.
    public static func candidateMessage(generation received: UInt32, current: UInt32) -> GenerationDecision {
        received == current ? .apply : .ignore
    }
}
