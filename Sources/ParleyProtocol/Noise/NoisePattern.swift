/// A Noise handshake pattern (Noise §7): the tokens of the pre-messages and of each message.
/// Parley runs IKpsk2; the other patterns are here because they share every line of the state
/// machine, so the published test vectors for all of them check the code IKpsk2 runs.
public struct NoisePattern: Sendable, Hashable {
    public enum Token: String, Sendable, Hashable {
        case e, s, ee, es, se, ss, psk
    }

    /// The pattern name with its modifiers, e.g. `IKpsk2`.
    public let name: String
    let initiatorPreMessage: [Token]
    let responderPreMessage: [Token]
    /// Message `i` is sent by the initiator when `i` is even.
    let messages: [[Token]]
    /// Whether any `psk` token occurs (then `e` tokens also call MixKey, Noise §9.2).
    var usesPSK: Bool { messages.contains { $0.contains(.psk) } }
    var pskCount: Int { messages.reduce(0) { $0 + $1.filter { $0 == .psk }.count } }

    /// The pattern for a name such as `XX`, `IKpsk2` or `NNpsk0+psk2`; nil if unknown.
    public init?(name: String) {
        let (baseName, modifiers) = Self.splitModifiers(name)
        guard let base = Self.basePatterns[baseName] else { return nil }
        var messages = base.messages
        for modifier in modifiers {
            // pskN puts a psk token at the start of the first message (N = 0) or at the end of
            // message N (Noise §9.2).
            guard modifier.hasPrefix("psk"), let position = Int(modifier.dropFirst(3)), position <= messages.count
            else { return nil }
            if position == 0 {
                messages[0].insert(.psk, at: 0)
            } else {
                messages[position - 1].append(.psk)
            }
        }
        self.name = name
        initiatorPreMessage = base.initiatorPre
        responderPreMessage = base.responderPre
        self.messages = messages
    }

    private static func splitModifiers(_ name: String) -> (String, [String]) {
        guard let start = name.firstIndex(where: { $0.isLowercase }) else { return (name, []) }
        return (String(name[..<start]), name[start...].split(separator: "+").map(String.init))
    }

    private typealias Base = (initiatorPre: [Token], responderPre: [Token], messages: [[Token]])

    /// Noise §7.4 (one-way and interactive) and §18 (deferred) patterns, without modifiers.
    private static let basePatterns: [String: Base] = [
        "N": ([], [.s], [[.e, .es]]),
        "K": ([.s], [.s], [[.e, .es, .ss]]),
        "X": ([], [.s], [[.e, .es, .s, .ss]]),
        "NN": ([], [], [[.e], [.e, .ee]]),
        "NK": ([], [.s], [[.e, .es], [.e, .ee]]),
        "NX": ([], [], [[.e], [.e, .ee, .s, .es]]),
        "KN": ([.s], [], [[.e], [.e, .ee, .se]]),
        "KK": ([.s], [.s], [[.e, .es, .ss], [.e, .ee, .se]]),
        "KX": ([.s], [], [[.e], [.e, .ee, .se, .s, .es]]),
        "XN": ([], [], [[.e], [.e, .ee], [.s, .se]]),
        "XK": ([], [.s], [[.e, .es], [.e, .ee], [.s, .se]]),
        "XX": ([], [], [[.e], [.e, .ee, .s, .es], [.s, .se]]),
        "IN": ([], [], [[.e, .s], [.e, .ee, .se]]),
        "IK": ([], [.s], [[.e, .es, .s, .ss], [.e, .ee, .se]]),
        "IX": ([], [], [[.e, .s], [.e, .ee, .se, .s, .es]]),
        "NK1": ([], [.s], [[.e], [.e, .ee, .es]]),
        "NX1": ([], [], [[.e], [.e, .ee, .s], [.es]]),
        "X1N": ([], [], [[.e], [.e, .ee], [.s], [.se]]),
        "X1K": ([], [.s], [[.e, .es], [.e, .ee], [.s], [.se]]),
        "XK1": ([], [.s], [[.e], [.e, .ee, .es], [.s, .se]]),
        "X1K1": ([], [.s], [[.e], [.e, .ee, .es], [.s], [.se]]),
        "X1X": ([], [], [[.e], [.e, .ee, .s, .es], [.s], [.se]]),
        "XX1": ([], [], [[.e], [.e, .ee, .s], [.es, .s, .se]]),
        "X1X1": ([], [], [[.e], [.e, .ee, .s], [.es, .s], [.se]]),
        "K1N": ([.s], [], [[.e], [.e, .ee], [.se]]),
        "K1K": ([.s], [.s], [[.e, .es], [.e, .ee], [.se]]),
        "KK1": ([.s], [.s], [[.e], [.e, .ee, .se, .es]]),
        "K1K1": ([.s], [.s], [[.e], [.e, .ee, .es], [.se]]),
        "K1X": ([.s], [], [[.e], [.e, .ee, .s, .es], [.se]]),
        "KX1": ([.s], [], [[.e], [.e, .ee, .se, .s], [.es]]),
        "K1X1": ([.s], [], [[.e], [.e, .ee, .s], [.se, .es]]),
        "I1N": ([], [], [[.e, .s], [.e, .ee], [.se]]),
        "I1K": ([], [.s], [[.e, .es, .s], [.e, .ee], [.se]]),
        "IK1": ([], [.s], [[.e, .s], [.e, .ee, .se, .es]]),
        "I1K1": ([], [.s], [[.e, .s], [.e, .ee, .es], [.se]]),
        "I1X": ([], [], [[.e, .s], [.e, .ee, .s, .es], [.se]]),
        "IX1": ([], [], [[.e, .s], [.e, .ee, .se, .s], [.es]]),
        "I1X1": ([], [], [[.e, .s], [.e, .ee, .s], [.se, .es]]),
    ]
}
