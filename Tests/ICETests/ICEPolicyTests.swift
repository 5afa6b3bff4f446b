import ICE
import Testing

@Suite("ICE candidate policy, roles, failure reasons and configuration")
struct ICEPolicyTests {
    static func candidate(
        _ address: String, _ kind: ICECandidate.Kind = .host, transport: ICECandidate.Transport = .udp,
        component: Int = 1
    ) -> ICECandidate {
        ICECandidate(
            foundation: "1", component: component, transport: transport, priority: 1, address: IPAddress(address)!,
            port: 5000, kind: kind)
    }

    static let cases: [(ICECandidate, ICECandidatePolicy.Side, ICECandidateRejection?)] = [
        (candidate("10.11.0.2"), .local, nil),
        (candidate("203.0.113.10", .relayed), .remote, nil),
        (candidate("2001:db8::5"), .remote, nil),
        (candidate("0.0.0.0"), .remote, .unspecifiedAddress),
        (candidate("::"), .local, .unspecifiedAddress),
        (candidate("239.255.255.250"), .remote, .multicastAddress),
        (candidate("ff02::1"), .remote, .multicastAddress),
        (candidate("255.255.255.255"), .remote, .broadcastAddress),
        (candidate("169.254.1.1"), .local, .linkLocalAddress),
        (candidate("fe80::1"), .remote, .linkLocalAddress),
        (candidate("127.0.0.1"), .remote, .loopbackAddress),
        (candidate("::1"), .local, .loopbackAddress),
        (candidate("::ffff:127.0.0.1"), .remote, .loopbackAddress),
        (candidate("10.0.0.1", transport: .tcp(.passive)), .remote, .tcpDisabled),
        (candidate("10.0.0.1", component: 2), .remote, .unusedComponent),
    ]

    @Test(arguments: cases)
    func defaultPolicy(candidate: ICECandidate, side: ICECandidatePolicy.Side, expected: ICECandidateRejection?) {
        #expect(ICECandidatePolicy().rejection(of: candidate, side: side, count: 0) == expected)
    }

    @Test func loopbackAndTCPWhenAllowed() {
        let policy = ICECandidatePolicy(allowLoopback: true, allowTCP: true)
        #expect(policy.rejection(of: Self.candidate("127.0.0.1"), side: .remote, count: 0) == nil)
        #expect(policy.rejection(of: Self.candidate("10.0.0.1", transport: .tcp(.so)), side: .local, count: 0) == nil)
    }

    @Test(arguments: [ICECandidatePolicy.Side.local, .remote])
    func capsCandidatesPerStream(side: ICECandidatePolicy.Side) {
        let policy = ICECandidatePolicy(maxCandidatesPerStream: 3)
        #expect(policy.rejection(of: Self.candidate("10.0.0.1"), side: side, count: 2) == nil)
        #expect(policy.rejection(of: Self.candidate("10.0.0.1"), side: side, count: 3) == .tooMany(limit: 3))
    }

    @Test(arguments: ICECandidate.Kind.allCases)
    func relayOnlyOffersOnlyRelays(kind: ICECandidate.Kind) {
        let policy = ICECandidatePolicy(relayOnly: true)
        let offered = policy.rejection(of: Self.candidate("203.0.113.10", kind), side: .local, count: 0)
        #expect(offered == (kind == .relayed ? nil : .notRelayed))
        // The peer's candidates are its own business.
        #expect(policy.rejection(of: Self.candidate("198.51.100.7", kind), side: .remote, count: 0) == nil)
    }

    @Test func relayOnlyHidesTheMappedAddress() {
        var relay = Self.candidate("203.0.113.10", .relayed)
        relay.relatedAddress = IPAddress("198.51.100.11")
        relay.relatedPort = 40402
        let signalled = ICECandidatePolicy(relayOnly: true).signalled(relay)
        #expect(signalled.relatedAddress == IPAddress("0.0.0.0"))
        #expect(signalled.relatedPort == 0)
        #expect(!signalled.line.contains("198.51.100.11"))
        #expect(ICECandidatePolicy().signalled(relay) == relay)
    }

    static let identities: [([UInt8], [UInt8], ICERole)] = [
        ([1, 2, 3], [1, 2, 4], .controlling),
        ([1, 2, 4], [1, 2, 3], .controlled),
        ([0xff], [0x00, 0xff], .controlled),
        ([0x00, 0xff], [0xff], .controlling),
        ([7, 7], [7, 7, 0], .controlling),
        ([7, 7], [7, 7], .controlled),
    ]

    @Test(arguments: identities)
    func roleRule(local: [UInt8], peer: [UInt8], expected: ICERole) {
        #expect(ICERole.forPair(localIdentity: local, peerIdentity: peer) == expected)
        if local != peer {
            // The peer, computing with the arguments swapped, takes the other role.
            #expect(ICERole.forPair(localIdentity: peer, peerIdentity: local) != expected)
        }
    }

    static let failures: [(ICEFailure.Facts, ICEFailure)] = [
        (
            .init(
                wasConnected: true, hasRemoteCredentials: true, remoteCandidateKinds: [.host],
                localCandidateKinds: [.host], relayConfigured: false), .connectionLost
        ),
        (
            .init(
                wasConnected: false, hasRemoteCredentials: false, remoteCandidateKinds: [],
                localCandidateKinds: [.host], relayConfigured: false), .noRemoteCredentials
        ),
        (
            .init(
                wasConnected: false, hasRemoteCredentials: true, remoteCandidateKinds: [],
                localCandidateKinds: [.host], relayConfigured: true), .noRemoteCandidates
        ),
        (
            .init(
                wasConnected: false, hasRemoteCredentials: true, remoteCandidateKinds: [.host, .serverReflexive],
                localCandidateKinds: [.host, .serverReflexive], relayConfigured: true), .relayUnavailable
        ),
        (
            .init(
                wasConnected: false, hasRemoteCredentials: true, remoteCandidateKinds: [.host, .serverReflexive],
                localCandidateKinds: [.host, .serverReflexive], relayConfigured: false), .noDirectPathNeedsRelay
        ),
        (
            .init(
                wasConnected: false, hasRemoteCredentials: true, remoteCandidateKinds: [.relayed],
                localCandidateKinds: [.host], relayConfigured: false), .checksFailed
        ),
        (
            .init(
                wasConnected: false, hasRemoteCredentials: true, remoteCandidateKinds: [.host],
                localCandidateKinds: [.relayed], relayConfigured: true), .checksFailed
        ),
    ]

    @Test(arguments: failures)
    func diagnosesFailures(facts: ICEFailure.Facts, expected: ICEFailure) {
        #expect(ICEFailure.diagnose(facts) == expected)
        #expect(!expected.description.isEmpty)
    }

    // MARK: Configuration

    @Test func relayOnlyNeedsATURNServer() {
        #expect(throws: ICEError.self) { try ICEConfiguration(relayOnly: true).validate() }
        let turn = TURNServer(
            endpoint: ICEServerEndpoint(address: IPAddress("203.0.113.10")!, port: 3478), username: "u", password: "p")
        #expect(throws: Never.self) { try ICEConfiguration(turnServers: [turn], relayOnly: true).validate() }
    }

    @Test func loopbackCandidatesOnlyForLoopbackNodes() {
        #expect(ICEConfiguration(localAddresses: [IPAddress("127.0.0.1")!]).candidatePolicy.allowLoopback)
        #expect(!ICEConfiguration().candidatePolicy.allowLoopback)
        #expect(!ICEConfiguration(localAddresses: [IPAddress("10.0.0.1")!]).candidatePolicy.allowLoopback)
        #expect(!ICEConfiguration().candidatePolicy.allowTCP)
    }

    static let endpoints: [(String, String?)] = [
        ("203.0.113.10:3478", "203.0.113.10:3478"),
        ("203.0.113.10", "203.0.113.10:3478"),
        ("[2001:db8::1]:5349", "[2001:db8::1]:5349"),
        ("2001:db8::1", "[2001:db8::1]:3478"),
        ("stun.example.org:3478", nil),
        ("203.0.113.10:0", nil),
        ("203.0.113.10:+80", nil),
        ("203.0.113.10:70000", nil),
        ("[2001:db8::1", nil),
        ("[2001:db8::1]x", nil),
    ]

    @Test(arguments: endpoints)
    func parsesServerEndpoints(text: String, expected: String?) {
        #expect((try? ICEServerEndpoint(text))?.description == expected)
    }

    static let turnURLs: [(String, String?)] = [
        ("turn:203.0.113.10:3478?transport=udp", "203.0.113.10:3478 udp"),
        ("turn:203.0.113.10?transport=tcp", "203.0.113.10:3478 tcp"),
        ("turn:203.0.113.10:3479", "203.0.113.10:3479 udp"),
        ("turns:203.0.113.10:5349", nil),
        ("turn:203.0.113.10:3478?transport=sctp", nil),
        ("stun:203.0.113.10", nil),
        ("turn:relay.example.org", nil),
    ]

    @Test(arguments: turnURLs)
    func parsesTURNURLs(url: String, expected: String?) {
        let server = try? TURNServer(url: url, username: "1700000000:abc", password: "c2VjcmV0")
        #expect(server.map { "\($0.endpoint) \($0.transport.rawValue)" } == expected)
        if let server { #expect(!server.description.contains("c2VjcmV0")) }
    }

    @Test func credentialsFollowRFC5245AndHideThePassword() throws {
        let credentials = try ICECredentials(ufrag: "Ab3+", password: "0123456789abcdefghij+/")
        #expect(!credentials.description.contains("0123456789"))
        #expect(throws: ICEError.self) { try ICECredentials(ufrag: "abc", password: "0123456789abcdefghij+/") }
        #expect(throws: ICEError.self) { try ICECredentials(ufrag: "abcd", password: "short") }
        #expect(throws: ICEError.self) { try ICECredentials(ufrag: "ab d", password: "0123456789abcdefghij+/") }
    }
}
