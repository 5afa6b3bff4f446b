/// A stream's ICE username fragment and password (RFC 5245 §15.4). The ufrag travels in the clear
/// in every connectivity check; the password keys the checks' MESSAGE-INTEGRITY, so it only travels
/// inside sealed signaling and is never printed.
public struct ICECredentials: Hashable, Sendable, CustomStringConvertible {
    public let ufrag: String
    public let password: String

    /// Checks RFC 5245 §15.4: ufrag 4–256 and password 22–256 ice-chars.
    public init(ufrag: String, password: String) throws(ICEError) {
        guard Self.isValidFragment(Substring(ufrag), length: 4...256) else {
            throw ICEError(.invalidCredentials, "an ICE ufrag is 4 to 256 characters of A-Z a-z 0-9 + /")
        }
        guard Self.isValidFragment(Substring(password), length: 22...256) else {
            throw ICEError(.invalidCredentials, "an ICE password is 22 to 256 characters of A-Z a-z 0-9 + /")
        }
        self.ufrag = ufrag
        self.password = password
    }

    /// Redacts the password.
    public var description: String { "ICECredentials(ufrag: \(ufrag), password: <redacted>)" }

    static func isValidFragment(_ text: Substring, length: ClosedRange<Int>) -> Bool {
        length.contains(text.utf8.count) && text.utf8.allSatisfy(ICECandidate.isICEChar)
    }
}
