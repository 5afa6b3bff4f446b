internal import NIOCore

/// What per-address limits count by: an IPv4 address, or the /64 prefix of an IPv6 address (one
/// host or home network usually holds a whole /64, so counting single IPv6 addresses would let
/// one client take 2^64 identities). IPv4-mapped IPv6 addresses count as IPv4.
struct SourceAddressKey: Hashable {
    let bytes: [UInt8]

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    init(_ address: SocketAddress?) {
        switch address {
        case .v4(let v4):
            bytes = withUnsafeBytes(of: v4.address.sin_addr.s_addr) { Array($0) }
        case .v6(let v6):
            let raw = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if raw.prefix(12).elementsEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]) {
                bytes = Array(raw.suffix(4))
            } else {
                bytes = Array(raw.prefix(8))
            }
        default:
            bytes = []  // Unix sockets and the like: one bucket
        }
    }
}
