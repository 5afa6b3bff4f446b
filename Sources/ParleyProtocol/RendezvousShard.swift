internal import ParleyCore
internal import Sodium

/// The routing key of a room in the rendezvous URL (docs/PROTOCOL.md §4.1): clients connect to
/// the invite's path plus `r/<shard key>`, so a load balancer that hashes the request path sends
/// every member of a room to the same rendezvous instance, and the instance refuses a member
/// whose JOIN names another room (`misrouted`). The key is a short hash of the room id, not the
/// room id itself: a proxy's access log learns nothing it could not compute from a room id it
/// already knows.
public enum RendezvousShard {
    /// The hash key: a public constant that separates this use of BLAKE2b from every other.
    static let hashKey = Array("parley/v1/shard".utf8)
    /// Bytes of the hash the shard key keeps: 64 bits spread rooms evenly and make two rooms
    /// sharing a key (which would only share an instance) vanishingly rare.
    static let keyBytes = 8
    /// Characters of a shard key: base32 of 8 bytes.
    public static let keyLength = Base32.encodedLength(byteCount: keyBytes)
    /// The path segment before the key.
    static let segment = "r"

    /// `base32(BLAKE2b(key = "parley/v1/shard", outlen = 32)(room_id)[0..<8])`, 13 characters.
    public static func key(roomID: [UInt8]) -> String {
        // The key is a valid length constant, so hashing cannot fail.
        let digest = try! BLAKE2b.hash(roomID, outputLength: 32, key: SecureBytes(copying: hashKey))
        return Base32.encode(digest.prefix(keyBytes))
    }

    /// The request path for a room: the invite's path without its trailing `/`, then `/r/<key>`.
    /// `/` gives `/r/<key>`; `/parley` and `/parley/` both give `/parley/r/<key>`.
    public static func path(invitePath: String, roomID: [UInt8]) -> String {
        var base = Substring(invitePath)
        while base.hasSuffix("/") { base = base.dropLast() }
        return "\(base)/\(segment)/\(key(roomID: roomID))"
    }

    /// The shard key a request target carries, or nil for a path without one (an older client):
    /// its path (before any `?`) ends in `/r/` and 13 characters of the lowercase base32 alphabet.
    public static func key(inRequestTarget target: String) -> Substring? {
        let path = target.prefix { $0 != "?" }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        guard segments.count >= 3, segments[segments.count - 2] == segment else { return nil }
        let key = segments[segments.count - 1]
        guard key.utf8.count == keyLength,
            key.utf8.allSatisfy({ (97...122).contains($0) || (50...55).contains($0) })
        else { return nil }
        return key
    }
}
