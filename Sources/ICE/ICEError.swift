/// An error from the ICE module, with a readable description naming what went wrong.
public struct ICEError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// The configuration cannot work (say, relay-only without a TURN server).
        case invalidConfiguration
        case invalidCredentials
        /// A remote candidate line did not parse.
        case invalidCandidate(ICECandidateError.Reason)
        /// A remote candidate parsed but the policy refuses it (multicast, too many, ...).
        case candidateRejected(ICECandidateRejection)
        /// The peer changed its credentials without this side restarting (RFC 5245 §9.2.1.1).
        case restartRequired
        case unknownStream
        case closed
        /// libnice refused a call.
        case libnice
    }

    public let kind: Kind
    public let description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}
