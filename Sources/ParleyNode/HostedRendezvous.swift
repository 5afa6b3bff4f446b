public import ICE
public import Logging
public import ParleyProtocol
import RendezvousClient
import RendezvousServer
public import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// `parleyd --host`: a rendezvous server embedded in the daemon, and a fresh invite that points
/// at it. It serves wss:// by default, with a self-signed certificate made at start whose key the
/// invite pins (§2.2), as a standalone rendezvous with its own certificate does: the rendezvous
/// learns nothing from TLS, but whoever watches the network learns even less (room id, sizes).
public enum HostedRendezvous {
    /// The `--host` flags as given: `--listen HOST:PORT`, `--advertise HOST`, and TLS unless
    /// `--no-tls`.
    public struct Settings: Sendable {
        public var listen: String
        public var advertise: String?
        public var tls: Bool

        public init(listen: String, advertise: String?, tls: Bool) {
            self.listen = listen
            self.advertise = advertise
            self.tls = tls
        }

        /// Refuses a `--listen` that is not HOST:PORT, one line.
        public func validate() throws(NodeError) {
            guard RendezvousServerConfiguration.HostAndPort(parsing: listen) != nil else {
                throw NodeError("--listen wants HOST:PORT or [IPv6]:PORT, got \(listen)")
            }
        }
    }

    /// Where the certificate and its key go: the node's state directory (0700; the key 0600).
    static let certificateFile = "hosted-rendezvous-cert.pem"
    static let keyFile = "hosted-rendezvous-key.pem"

    /// Starts the server (port 0 picks a free port) and mints the meeting's invite. With `tls`,
    /// a fresh certificate and key are written to `stateDirectory` first.
    /// The server is a `Service`: stopping it sends every client GOING_AWAY.
    public static func start(
        _ settings: Settings, ice: ICESettings, stateDirectory: String, logger: Logger
    ) async throws -> (server: any Service, invite: Invite) {
        try settings.validate()
        let listen = RendezvousServerConfiguration.HostAndPort(parsing: settings.listen)!
        let (advertise, tls) = (settings.advertise, settings.tls)
        var configuration = RendezvousServerConfiguration()
        configuration.listen = listen
        var pin: [UInt8]?
        if tls {
            let files = try writeCertificate(to: stateDirectory)
            configuration.tls = files
            pin = try SPKIPin.ofCertificate(pemFile: files.certificateChainPath)
        }
        let server = RendezvousServer(configuration: configuration, logger: logger)
        let bound = try await server.start()
        let host = advertisedHost(
            listenHost: listen.host, advertise: advertise, localAddresses: ice.localIPAddresses,
            interfaces: interfaceAddresses())
        let url: RendezvousURL
        do {
            let scheme = tls ? "wss" : "ws"
            url = try RendezvousURL(
                parsing: "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(bound.rendezvous.port)")
        } catch {
            await server.shutdown()
            throw NodeError("cannot advertise \(host) in an invite: \(error)")
        }
        return (server, try Invite.mint(rendezvous: url, tlsPin: pin))
    }

    /// A new self-signed certificate and its key in `directory` (replacing the last run's).
    static func writeCertificate(to directory: String) throws -> RendezvousServerConfiguration.TLSFiles {
        let pem = SelfSignedCertificate.make()
        try PrivateFile.ensureDirectory(directory)
        let files = RendezvousServerConfiguration.TLSFiles(
            certificateChainPath: "\(directory)/\(certificateFile)", privateKeyPath: "\(directory)/\(keyFile)")
        try PrivateFile.write(Array(pem.privateKey.utf8), to: files.privateKeyPath)
        try PrivateFile.write(Array(pem.certificate.utf8), to: files.certificateChainPath)
        return files
    }

    /// The host peers use to reach the embedded rendezvous, by this rule:
    /// 1. `--advertise HOST` when given;
    /// 2. else the `--listen` host, when it is a specific address (not 0.0.0.0 or ::);
    /// 3. else the first `--local-address` (the node's ICE is restricted to it, so it is the
    ///    address this meeting lives on, e.g. 127.0.0.1 for a meeting on one machine);
    /// 4. else the first IPv4 address of an interface that is up, not loopback and not
    ///    link-local (a LAN or public address);
    /// 5. else 127.0.0.1.
    public static func advertisedHost(
        listenHost: String, advertise: String?, localAddresses: [IPAddress], interfaces: [IPAddress]
    ) -> String {
        if let advertise, !advertise.isEmpty { return advertise }
        if let listen = IPAddress(listenHost), !listen.isUnspecified { return listen.description }
        if !listenHost.isEmpty, IPAddress(listenHost) == nil { return listenHost }  // a host name
        if let local = localAddresses.first { return local.description }
        if let lan = interfaces.first(where: { $0.isIPv4 && !$0.isLoopback && !$0.isLinkLocal && !$0.isUnspecified }) {
            return lan.description
        }
        return "127.0.0.1"
    }

    /// IPv4 (and with `ipv6`, IPv6) addresses of the interfaces that are up, in the order the
    /// kernel lists them.
    static func interfaceAddresses(ipv6: Bool = false) -> [IPAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [IPAddress] = []
        var entry = list
        while let current = entry {
            defer { entry = current.pointee.ifa_next }
            guard current.pointee.ifa_flags & UInt32(IFF_UP) != 0, let address = current.pointee.ifa_addr else {
                continue
            }
            let bytes: [UInt8]
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                    withUnsafeBytes(of: v4.pointee.sin_addr.s_addr) { Array($0) }
                }
            case AF_INET6 where ipv6:
                bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                    withUnsafeBytes(of: v6.pointee.sin6_addr) { Array($0) }
                }
            default: continue
            }
            if let parsed = IPAddress(bytes: bytes) { addresses.append(parsed) }
        }
        return addresses
    }
}
