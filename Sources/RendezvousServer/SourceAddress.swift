internal import NIOCore
internal import RendezvousWire

/// What per-address limits count by: an IPv4 address, or the /64 prefix of an IPv6 address (one
/// host or home network usually holds a whole /64, so counting single IPv6 addresses would let
/// one client take 2^64 identities). IPv4-mapped IPv6 addresses count as IPv4.
struct SourceAddressKey: Hashable {
    let bytes: [UInt8]

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    init(_ address: InternetAddress?) {
        guard let address = address?.unmapped else {
            bytes = []  // Unix sockets and the like: one bucket
            return
        }
        bytes = address.isIPv4 ? address.bytes : Array(address.bytes.prefix(8))
    }

    init(_ address: SocketAddress?) {
        self.init(InternetAddress(address))
    }
}

extension InternetAddress {
    /// The IP address of a NIO socket address (nil for a Unix socket).
    init?(_ address: SocketAddress?) {
        switch address {
        case .v4(let v4): self.init(bytes: withUnsafeBytes(of: v4.address.sin_addr.s_addr) { Array($0) })
        case .v6(let v6): self.init(bytes: withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) })
        default: return nil
        }
    }
}

/// The proxies whose word about a client's address is believed (`--trusted-proxy`): a load
/// balancer in front of the rendezvous reports the address it received each connection from
/// (PROXY protocol, or `X-Forwarded-For` on the upgrade request), and the per-address limits
/// count that address instead of the balancer's. Nobody else's claims count, so a client cannot
/// pick the address it is counted under.
struct TrustedProxies {
    let networks: [IPNetwork]

    func isTrusted(_ address: InternetAddress?) -> Bool {
        guard let address else { return false }
        return networks.contains { $0.contains(address) }
    }

    /// The client behind `peer`: walking the chain of hops from the nearest, `peer` itself, then
    /// the PROXY protocol source, then `X-Forwarded-For` from its right end, the first hop that
    /// is not a trusted proxy. An entry that is not an address ends the walk at the hop before it
    /// (nothing beyond can be believed); a chain of trusted proxies only gives its leftmost.
    func clientAddress(
        peer: InternetAddress, proxyProtocolSource: InternetAddress?, forwardedFor: [InternetAddress?]
    ) -> InternetAddress {
        var current = peer
        guard isTrusted(current) else { return current }
        let hops: [InternetAddress?] = forwardedFor + (proxyProtocolSource.map { [$0] } ?? [])
        for hop in hops.reversed() {
            guard let hop else { return current }
            current = hop
            if !isTrusted(hop) { return hop }
        }
        return current
    }
}
