/// Which side of a pair drives nomination (RFC 5245 §5.2, §8.1.1). Both sides must agree without
/// talking, so the role comes from a rule over what both already know: their identity keys.
public enum ICERole: String, Hashable, Sendable, CustomStringConvertible {
    case controlling, controlled

    /// The side whose identity key sorts first (bytewise) is controlling. Each peer computes it with
    /// the arguments swapped and gets the opposite answer; equal keys (one node talking to itself,
    /// which a meeting never does) give `.controlled`, and libnice's tie-breaker (RFC 5245 §7.2.1.1)
    /// would settle the conflict.
    public static func forPair(localIdentity: some Sequence<UInt8>, peerIdentity: some Sequence<UInt8>) -> ICERole {
        localIdentity.lexicographicallyPrecedes(peerIdentity) ? .controlling : .controlled
    }

    public var description: String { rawValue }
}
