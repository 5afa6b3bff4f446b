internal import Crypto
internal import FoundationEssentials
internal import RendezvousWire

/// Issues TURN credentials in the TURN REST API form (draft-uberti-behave-turn-rest-00 §2.2) that
/// coturn accepts with `use-auth-secret` / `static-auth-secret`: the user name is the expiry time
/// (Unix seconds) and a random id, the password is base64(HMAC-SHA1(secret, user name)). coturn
/// recomputes the password from the shared secret and rejects it after the expiry, so the
/// rendezvous hands out short-lived credentials without ever talking to coturn.
struct TURNCredentialIssuer {
    private let key: SymmetricKey
    let urls: [String]
    let ttlSeconds: UInt32

    init(_ configuration: RendezvousServerConfiguration.TURNConfiguration) {
        key = SymmetricKey(data: configuration.secret)
        urls = configuration.urls
        ttlSeconds = configuration.ttlSeconds
    }

    /// Credentials valid until `now + ttl`, one per configured URL (they share user and password).
    func issue(now unixTime: UInt64, randomID: UInt64) -> [TURNCredential] {
        let username = "\(unixTime + UInt64(ttlSeconds)):\(String(randomID, radix: 16))"
        let password = Self.password(for: username, key: key)
        return urls.map { TURNCredential(ttlSeconds: ttlSeconds, url: $0, username: username, password: password) }
    }

    /// base64(HMAC-SHA1(secret, username)).
    static func password(for username: String, key: SymmetricKey) -> String {
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(username.utf8), using: key)
        return Data(mac).base64EncodedString()
    }
}
