internal import RendezvousWire

/// The rooms of one server, keyed by room id (docs/PROTOCOL.md §4.3): who is in each, under which
/// ephemeral member id, and how many rooms each source address is in. Nothing is stored beyond
/// the members present: a room that empties is forgotten at once. Pure logic, generic over what a
/// member is, so it is tested without sockets; the server keeps it on its one event loop.
struct RoomRegistry<Member> {
    private var rooms: [[UInt8]: [RendezvousMemberID: Member]] = [:]
    /// Per source address: room id → members from that address in it.
    private var roomsByAddress: [SourceAddressKey: [[UInt8]: Int]] = [:]
    let membersPerRoom: Int
    let roomsPerAddress: Int

    init(membersPerRoom: Int, roomsPerAddress: Int) {
        self.membersPerRoom = membersPerRoom
        self.roomsPerAddress = roomsPerAddress
    }

    enum JoinOutcome {
        /// Admitted as `memberID`; `others` are the members already present.
        case admitted(memberID: RendezvousMemberID, others: [(RendezvousMemberID, Member)])
        case refused(RendezvousError)
    }

    var roomCount: Int { rooms.count }

    /// Admits `member` (whose join proof the caller has verified) to `roomID`, creating the room.
    mutating func join(
        roomID: [UInt8], member: Member, from address: SourceAddressKey,
        using generator: inout some RandomNumberGenerator
    ) -> JoinOutcome {
        let present = rooms[roomID] ?? [:]
        guard present.count < membersPerRoom else {
            return .refused(RendezvousError(.roomFull, "the room is full (\(membersPerRoom) members)"))
        }
        var addressRooms = roomsByAddress[address] ?? [:]
        guard addressRooms[roomID] != nil || addressRooms.count < roomsPerAddress else {
            return .refused(
                RendezvousError(.tooManyConnections, "your address is in too many rooms (\(roomsPerAddress))"))
        }
        // §4.2: random, non-zero, unique within the room.
        var memberID: RendezvousMemberID
        repeat { memberID = generator.next() } while memberID == 0 || present[memberID] != nil
        rooms[roomID, default: [:]][memberID] = member
        addressRooms[roomID, default: 0] += 1
        roomsByAddress[address] = addressRooms
        return .admitted(memberID: memberID, others: present.map { ($0.key, $0.value) })
    }

    /// Removes a member; returns the members who remain (to tell them MEMBER_LEFT). The room and
    /// the address's entry vanish when they empty.
    mutating func leave(roomID: [UInt8], memberID: RendezvousMemberID, from address: SourceAddressKey) -> [Member] {
        guard var members = rooms[roomID], members.removeValue(forKey: memberID) != nil else { return [] }
        rooms[roomID] = members.isEmpty ? nil : members
        if var addressRooms = roomsByAddress[address], let count = addressRooms[roomID] {
            addressRooms[roomID] = count > 1 ? count - 1 : nil
            roomsByAddress[address] = addressRooms.isEmpty ? nil : addressRooms
        }
        return Array(members.values)
    }

    /// Whom a SEND from `sender` to `recipient` reaches (§4.3): every other member for
    /// `RendezvousMessage.everyone`, the named member if present and not the sender, else nobody.
    func recipients(roomID: [UInt8], from sender: RendezvousMemberID, to recipient: RendezvousMemberID) -> [Member] {
        guard let members = rooms[roomID] else { return [] }
        if recipient == RendezvousMessage.everyone {
            return members.compactMap { $0.key == sender ? nil : $0.value }
        }
        guard recipient != sender, let member = members[recipient] else { return [] }
        return [member]
    }

    /// Every member of every room (for GOING_AWAY on shutdown).
    var allMembers: [Member] { rooms.values.flatMap(\.values) }

    /// Whether `address` is tracked at all (tests check that nothing lingers).
    func isTracking(_ address: SourceAddressKey) -> Bool { roomsByAddress[address] != nil }
}
