import ParleyCore
import Sodium

/// A member of the meeting as one node sees it: identity key and display name.
public struct CodeMember: Sendable, Hashable {
    public let identityKey: [UInt8]
    public let name: String

    public init(identityKey: [UInt8], name: String) {
        self.identityKey = identityKey
        self.name = name
    }
}

/// Why a node cannot show a security code for what it sees (shown to the user as is).
public struct SecurityCodeError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The meeting as one node sees it, for the security code (docs/PROTOCOL.md §11.1): every member
/// with an established session and the node itself, by identity key and display name, and the
/// hash that names this view in COMMIT and REVEAL.
///
/// ```
/// view_hash = BLAKE2b-256("parley/v1/code-view\0" || room_id[32] || n: u16
///                         || for each member, by identity key ascending:
///                            identity[32] || name_length: u8 || name)
/// ```
public struct SecurityCodeView: Sendable, Hashable {
    static let context: [UInt8] = Array("parley/v1/code-view\0".utf8)
    public static let maximumMembers = Int(UInt16.max)

    /// Sorted by identity key (unsigned bytes, ascending).
    public let members: [CodeMember]
    public let hash: [UInt8]

    /// Refuses (with what is wrong) a view that cannot be encoded: two members with one identity
    /// key, a key that is not 32 bytes, a name that is empty or longer than 255 bytes, or more
    /// than 65535 members. No such view is ever an honest meeting, so the node shows the reason
    /// instead of a code.
    public init(roomID: [UInt8], members unsorted: [CodeMember]) throws(SecurityCodeError) {
        guard unsorted.count <= Self.maximumMembers else {
            throw SecurityCodeError("more than \(Self.maximumMembers) members in the meeting")
        }
        let members = unsorted.sorted { $0.identityKey.lexicographicallyPrecedes($1.identityKey) }
        for (index, member) in members.enumerated() {
            guard member.identityKey.count == 32 else { throw SecurityCodeError("an identity key is not 32 bytes") }
            guard (1...255).contains(member.name.utf8.count) else {
                throw SecurityCodeError("a member's name is empty or longer than 255 bytes")
            }
            if index > 0, members[index - 1].identityKey == member.identityKey {
                throw SecurityCodeError("one identity key appears twice (\(hexString(member.identityKey.prefix(4))))")
            }
        }
        var writer = ByteWriter()
        writer.writeBytes(Self.context)
        writer.writeBytes(roomID)
        writer.writeU16(UInt16(members.count))
        for member in members {
            writer.writeBytes(member.identityKey)
            writer.writeU8(UInt8(member.name.utf8.count))
            writer.writeBytes(member.name.utf8)
        }
        self.members = members
        // 32 is a valid BLAKE2b output length: this cannot throw.
        hash = try! BLAKE2b.hash(writer.bytes, outputLength: 32)
    }

    public func contains(_ identityKey: [UInt8]) -> Bool {
        members.contains { $0.identityKey == identityKey }
    }

    /// `BLAKE2b-256("parley/v1/code-commit\0" || sender[32] || view_hash[32] || round: u64 || nonce[32])`:
    /// binds a nonce to its sender, view and round, so nobody can pass another member's
    /// commitment off as their own.
    public func commitment(of nonce: [UInt8], by sender: [UInt8], round: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeBytes(Self.commitContext)
        writer.writeBytes(sender)
        writer.writeBytes(hash)
        writer.writeU64(round)
        writer.writeBytes(nonce)
        return try! BLAKE2b.hash(writer.bytes, outputLength: 32)
    }

    static let commitContext: [UInt8] = Array("parley/v1/code-commit\0".utf8)
}
