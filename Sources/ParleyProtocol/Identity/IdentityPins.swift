import ParleyCore

/// The identity keys this node has met in one room, by display name (docs/PROTOCOL.md §11.2):
/// trust on first use, as ssh's known_hosts. When a member shows up under a known name with a
/// different key, `check` throws, and the node should warn loudly and ask the user to compare the
/// security code before trusting that member. A pure value: `File` loads and saves it, stored in `<state>/pins/<room id in hex>`, mode 0600, one line per member:
/// `<identity key, 64 hex digits> <display name>`.
public struct IdentityPins: Sendable, Hashable {
    /// The display name and identity key of a pinned member.
    public struct Pin: Sendable, Hashable {
        public let displayName: String
        public let identityKey: [UInt8]
    }

    /// What `check` found.
    public enum Verdict: Sendable, Hashable {
        /// Name and key are pinned together.
        case known
        /// Neither name nor key was seen in this room before.
        case new
        /// The key is pinned under another name: the member renamed themselves.
        case renamed(from: String)
    }

    public private(set) var pins: [Pin] = []

    /// No pins (a room never met before).
    public init() {}

    /// Parses the file format; `source` names the file in errors.
    public init(parsing text: String, source: String) throws(StateFileError) {
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, let key = Self.bytes(ofHex: parts[0]), key.count == 32 else {
                throw StateFileError("\(source) line \(number + 1) is not \"<64 hex digits> <name>\"")
            }
            pins.append(Pin(displayName: String(parts[1]), identityKey: key))
        }
    }

    /// The file format: one `<identity key, 64 hex digits> <display name>` line per pin.
    public var serialized: String {
        pins.map { "\(hexString($0.identityKey)) \($0.displayName)\n" }.joined()
    }

    /// Compares a member who authenticated as `identityKey` and calls themselves `displayName`
    /// with the pins. Throws `IdentityKeyChanged` when the name is pinned to another key.
    public func check(displayName: String, identityKey: [UInt8]) throws(IdentityKeyChanged) -> Verdict {
        if let pin = pins.first(where: { $0.displayName == displayName }) {
            guard pin.identityKey == identityKey else {
                throw IdentityKeyChanged(
                    displayName: displayName, pinnedKey: pin.identityKey, presentedKey: identityKey)
            }
            return .known
        }
        if let pin = pins.first(where: { $0.identityKey == identityKey }) { return .renamed(from: pin.displayName) }
        return .new
    }

    /// Whether `identityKey` is pinned under any name.
    public func contains(identityKey: [UInt8]) -> Bool { pins.contains { $0.identityKey == identityKey } }

    /// Pins `displayName` to `identityKey`, replacing what either was pinned to. Call it for new
    /// members, renames, and when the user accepted a changed key; then save the pins.
    public mutating func pin(displayName: String, identityKey: [UInt8]) throws(StateFileError) {
        guard (try? Hello.validateDisplayName(displayName)) != nil, identityKey.count == 32 else {
            throw StateFileError("cannot pin \"\(displayName)\": not a valid display name and identity key")
        }
        pins.removeAll { $0.displayName == displayName || $0.identityKey == identityKey }
        pins.append(Pin(displayName: displayName, identityKey: identityKey))
    }

    /// Where a room's pins are kept: `<state>/pins/<room id in hex>`, mode 0600.
    public struct File: Sendable, Hashable {
        public let path: String

        public init(stateDirectory: String, roomID: [UInt8]) {
            path = stateDirectory + "/pins/" + hexString(roomID)
        }

        /// The pins saved for the room (none if the file does not exist).
        public func load() throws(StateFileError) -> IdentityPins {
            guard let contents = try PrivateFile.read(path) else { return IdentityPins() }
            let text = contents.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            return try IdentityPins(parsing: text, source: path)
        }

        /// Replaces the file with `pins` (written aside and renamed: never half a file).
        public func save(_ pins: IdentityPins) throws(StateFileError) {
            let directory = String(path[..<path.lastIndex(of: "/")!])
            try PrivateFile.ensureDirectory(directory)
            try PrivateFile.write(Array(pins.serialized.utf8), to: path)
        }
    }

    private static func bytes(ofHex text: Substring) -> [UInt8]? {
        guard text.utf8.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }
}

/// A known member's identity key changed: someone else may be using their name.
public struct IdentityKeyChanged: Error, Hashable, Sendable, CustomStringConvertible {
    public let displayName: String
    public let pinnedKey: [UInt8]
    public let presentedKey: [UInt8]

    public var description: String {
        "\(displayName)'s identity key changed since you last met in this room (was \(hexString(pinnedKey.prefix(8)))…, "
            + "now \(hexString(presentedKey.prefix(8)))…). It may be a new installation, or someone else using the "
            + "name: compare the meeting security code with \(displayName) before trusting them."
    }
}
