import Crypto
import NIOHTTP1
import RendezvousWire
import Testing

@testable import RendezvousServer

@Suite("Rendezvous server logic")
struct ServerLogicTests {
    // MARK: Rooms

    static let roomA = [UInt8](repeating: 1, count: 32)
    static let roomB = [UInt8](repeating: 2, count: 32)
    static let roomC = [UInt8](repeating: 3, count: 32)
    static let home = SourceAddressKey(bytes: [192, 0, 2, 1])
    static let office = SourceAddressKey(bytes: [198, 51, 100, 7])

    func admittedID(_ outcome: RoomRegistry<String>.JoinOutcome) -> RendezvousMemberID? {
        if case .admitted(let id, _) = outcome { id } else { nil }
    }

    func refusal(_ outcome: RoomRegistry<String>.JoinOutcome) -> RendezvousErrorCode? {
        if case .refused(let error) = outcome { error.code } else { nil }
    }

    @Test func membersGetDistinctNonZeroIDsAndSeeEachOther() throws {
        var rooms = RoomRegistry<String>(membersPerRoom: 8, roomsPerAddress: 4)
        var random = SystemRandomNumberGenerator()
        let first = try #require(
            admittedID(rooms.join(roomID: Self.roomA, member: "a", from: Self.home, using: &random)))
        let outcome = rooms.join(roomID: Self.roomA, member: "b", from: Self.office, using: &random)
        guard case .admitted(let second, let others) = outcome else { Issue.record("refused"); return }
        #expect(first != 0 && second != 0 && first != second)
        #expect(others.map(\.0) == [first] && others.map(\.1) == ["a"])
        #expect(rooms.recipients(roomID: Self.roomA, from: first, to: RendezvousMessage.everyone) == ["b"])
        #expect(rooms.recipients(roomID: Self.roomA, from: first, to: second) == ["b"])
        #expect(rooms.recipients(roomID: Self.roomA, from: first, to: first).isEmpty, "no echo to self")
        #expect(rooms.recipients(roomID: Self.roomB, from: first, to: 0).isEmpty)
    }

    /// A generator that repeats values, to check the id collision and zero paths.
    struct ScriptedGenerator: RandomNumberGenerator {
        var values: [UInt64]
        mutating func next() -> UInt64 { values.removeFirst() }
    }

    @Test func idsSkipZeroAndCollisions() {
        var rooms = RoomRegistry<String>(membersPerRoom: 8, roomsPerAddress: 4)
        var scripted = ScriptedGenerator(values: [0, 7, 7, 0, 9])
        #expect(admittedID(rooms.join(roomID: Self.roomA, member: "a", from: Self.home, using: &scripted)) == 7)
        #expect(admittedID(rooms.join(roomID: Self.roomA, member: "b", from: Self.home, using: &scripted)) == 9)
    }

    @Test func fullRoomRefusesAndLeavingMakesSpace() throws {
        var rooms = RoomRegistry<String>(membersPerRoom: 2, roomsPerAddress: 4)
        var random = SystemRandomNumberGenerator()
        let a = try #require(admittedID(rooms.join(roomID: Self.roomA, member: "a", from: Self.home, using: &random)))
        _ = rooms.join(roomID: Self.roomA, member: "b", from: Self.home, using: &random)
        #expect(refusal(rooms.join(roomID: Self.roomA, member: "c", from: Self.home, using: &random)) == .roomFull)
        #expect(rooms.leave(roomID: Self.roomA, memberID: a, from: Self.home) == ["b"])
        #expect(admittedID(rooms.join(roomID: Self.roomA, member: "c", from: Self.home, using: &random)) != nil)
    }

    @Test func emptyRoomsAndAddressesAreForgotten() throws {
        var rooms = RoomRegistry<String>(membersPerRoom: 8, roomsPerAddress: 4)
        var random = SystemRandomNumberGenerator()
        let a = try #require(admittedID(rooms.join(roomID: Self.roomA, member: "a", from: Self.home, using: &random)))
        #expect(rooms.roomCount == 1 && rooms.isTracking(Self.home))
        #expect(rooms.leave(roomID: Self.roomA, memberID: a, from: Self.home).isEmpty)
        #expect(rooms.roomCount == 0 && !rooms.isTracking(Self.home))
        #expect(rooms.leave(roomID: Self.roomA, memberID: a, from: Self.home).isEmpty, "leaving twice is harmless")
    }

    @Test func roomsPerAddressCountsDistinctRooms() {
        var rooms = RoomRegistry<String>(membersPerRoom: 8, roomsPerAddress: 2)
        var random = SystemRandomNumberGenerator()
        _ = rooms.join(roomID: Self.roomA, member: "a1", from: Self.home, using: &random)
        _ = rooms.join(roomID: Self.roomA, member: "a2", from: Self.home, using: &random)
        _ = rooms.join(roomID: Self.roomB, member: "b", from: Self.home, using: &random)
        #expect(
            refusal(rooms.join(roomID: Self.roomC, member: "c", from: Self.home, using: &random)) == .tooManyConnections
        )
        #expect(admittedID(rooms.join(roomID: Self.roomA, member: "a3", from: Self.home, using: &random)) != nil)
        #expect(admittedID(rooms.join(roomID: Self.roomC, member: "c", from: Self.office, using: &random)) != nil)
    }

    // MARK: TURN REST credentials

    /// RFC 2202 §3 test cases 1 and 2 for HMAC-SHA1, through the password function.
    @Test(arguments: [
        ([UInt8](repeating: 0x0B, count: 20), "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
        (Array("Jefe".utf8), "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    ])
    func hmacSHA1KnownAnswers(key: [UInt8], data: String, hexDigest: String) {
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(data.utf8), using: SymmetricKey(data: key))
        #expect(Array(mac).map { String($0, radix: 16).leftPadded(2) }.joined() == hexDigest)
        // base64 of the same digest (the TURN password form).
        let expected = Self.base64(Array(mac))
        #expect(TURNCredentialIssuer.password(for: data, key: SymmetricKey(data: key)) == expected)
    }

    @Test func turnCredentialsHaveCoturnsRESTForm() throws {
        let issuer = TURNCredentialIssuer(
            .init(
                secret: Array("north".utf8), urls: ["turn:h:3478?transport=udp", "turn:h:3478?transport=tcp"],
                ttlSeconds: 600))
        let credentials = issuer.issue(now: 1_700_000_000, randomID: 0xABC)
        #expect(credentials.map(\.url) == ["turn:h:3478?transport=udp", "turn:h:3478?transport=tcp"])
        let credential = try #require(credentials.first)
        #expect(credential.username == "1700000600:abc")
        #expect(credential.ttlSeconds == 600)
        let mac = HMAC<Insecure.SHA1>.authenticationCode(
            for: Array("1700000600:abc".utf8), using: SymmetricKey(data: Array("north".utf8)))
        #expect(credential.password == Self.base64(Array(mac)))
    }

    /// An independent base64 (RFC 4648 §4) for the checks above.
    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var out = ""
        for chunk in stride(from: 0, to: bytes.count, by: 3) {
            let b = Array(bytes[chunk..<min(chunk + 3, bytes.count)]) + [0, 0]
            let n = Int(b[0]) << 16 | Int(b[1]) << 8 | Int(b[2])
            let chars = (0..<4).map { alphabet[(n >> (18 - 6 * $0)) & 63] }
            let keep = min(bytes.count - chunk, 3) + 1
            out += String(chars.prefix(keep)) + String(repeating: "=", count: 4 - keep)
        }
        return out
    }

    // MARK: Parsing helpers

    @Test(arguments: [
        ("0.0.0.0:7777", "0.0.0.0", 7777), ("127.0.0.1:0", "127.0.0.1", 0), ("[::1]:443", "::1", 443),
        (":3478", "0.0.0.0", 3478), ("rv.example.org:80", "rv.example.org", 80),
    ])
    func hostAndPortParses(text: String, host: String, port: Int) throws {
        let parsed = try #require(RendezvousServerConfiguration.HostAndPort(parsing: text))
        #expect(parsed.host == host && parsed.port == port)
    }

    @Test(arguments: ["7777", "host:", "host:70000", "::1:443", "host:-1"])
    func hostAndPortRejects(text: String) {
        #expect(RendezvousServerConfiguration.HostAndPort(parsing: text) == nil)
    }

    @Test(arguments: [("rv.example.org:7777", "rv.example.org"), ("[2001:db8::1]:7777", "2001:db8::1"), ("rv", "rv")])
    func hostHeaderHost(header: String, host: String) {
        #expect(RendezvousServer.hostname(header) == host)
    }

    @Test func limitsAreValidated() {
        var limits = RendezvousServerConfiguration.Limits()
        #expect(throws: Never.self) { try limits.validate() }
        limits.membersPerRoom = 16
        #expect(throws: Never.self) { try limits.validate() }
        limits.membersPerRoom = 17
        #expect(throws: RendezvousServerError.self) { try limits.validate() }
        limits = .init()
        limits.maxMessageBytes = 1000
        #expect(throws: RendezvousServerError.self) { try limits.validate() }
        limits = .init()
        limits.idleTimeout = limits.pingInterval
        #expect(throws: RendezvousServerError.self) { try limits.validate() }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

@Suite("Subprotocol offers")
struct SubprotocolOfferTests {
    @Test(arguments: [
        (["parley.v1"], ["parley.v1"]),
        (["parley.v2, parley.v1"], ["parley.v2", "parley.v1"]),
        (["parley.v2", " parley.v1 ,x"], ["parley.v2", "parley.v1", "x"]),
        (["\t,  "], ["", ""]),
    ])
    func tokensAreSplitAndTrimmed(lines: [String], tokens: [String]) {
        var headers = HTTPHeaders()
        for line in lines { headers.add(name: "Sec-WebSocket-Protocol", value: line) }
        #expect(RendezvousServer.offeredProtocols(headers).map(String.init) == tokens)
    }

    // MARK: Trusted proxies

    struct ProxyCase: Sendable, CustomTestStringConvertible {
        let name: String
        let peer: String
        let proxyProtocol: String?
        let forwardedFor: [String]
        let client: String
        var testDescription: String { name }
    }

    static let proxyCases: [ProxyCase] = [
        ProxyCase(
            name: "a direct client is itself", peer: "203.0.113.9", proxyProtocol: nil, forwardedFor: ["192.0.2.1"],
            client: "203.0.113.9"),
        ProxyCase(
            name: "the proxy's X-Forwarded-For", peer: "10.0.0.2", proxyProtocol: nil, forwardedFor: ["192.0.2.1"],
            client: "192.0.2.1"),
        ProxyCase(
            name: "what the client wrote in front is not believed", peer: "10.0.0.2", proxyProtocol: nil,
            forwardedFor: ["198.51.100.66, 192.0.2.1"], client: "192.0.2.1"),
        ProxyCase(
            name: "a chain of trusted proxies", peer: "10.0.0.2", proxyProtocol: nil,
            forwardedFor: ["192.0.2.1, 10.0.0.7", "10.0.0.8"], client: "192.0.2.1"),
        ProxyCase(
            name: "the PROXY protocol", peer: "10.0.0.2", proxyProtocol: "192.0.2.1", forwardedFor: [],
            client: "192.0.2.1"),
        ProxyCase(
            name: "the PROXY source outranks X-Forwarded-For behind it", peer: "10.0.0.2", proxyProtocol: "192.0.2.1",
            forwardedFor: ["198.51.100.66"], client: "192.0.2.1"),
        ProxyCase(
            name: "PROXY from a trusted proxy, then X-Forwarded-For", peer: "10.0.0.2", proxyProtocol: "10.0.0.3",
            forwardedFor: ["192.0.2.1"], client: "192.0.2.1"),
        ProxyCase(
            name: "garbage stops the walk at the last known hop", peer: "10.0.0.2", proxyProtocol: nil,
            forwardedFor: ["192.0.2.1, unknown, 10.0.0.9"], client: "10.0.0.9"),
        ProxyCase(
            name: "nothing reported: the proxy itself", peer: "10.0.0.2", proxyProtocol: nil, forwardedFor: [],
            client: "10.0.0.2"),
        ProxyCase(
            name: "a dual-stack socket's IPv4 proxy", peer: "::ffff:10.0.0.2", proxyProtocol: nil,
            forwardedFor: ["2001:db8::1"], client: "2001:db8::1"),
    ]

    @Test(arguments: proxyCases)
    func trustedProxiesNameTheClient(_ row: ProxyCase) {
        let proxies = TrustedProxies(networks: [IPNetwork(parsing: "10.0.0.0/8")!])
        let client = proxies.clientAddress(
            peer: InternetAddress(parsing: row.peer)!,
            proxyProtocolSource: row.proxyProtocol.flatMap(InternetAddress.init(parsing:)),
            forwardedFor: ForwardedFor.hops(row.forwardedFor))
        #expect(client == InternetAddress(parsing: row.client))
    }

    @Test func sourceKeysCountIPv6PerSlash64AndMappedAsIPv4() {
        #expect(
            SourceAddressKey(InternetAddress(parsing: "::ffff:192.0.2.1")) == SourceAddressKey(bytes: [192, 0, 2, 1]))
        #expect(
            SourceAddressKey(InternetAddress(parsing: "2001:db8:1:2::1"))
                == SourceAddressKey(InternetAddress(parsing: "2001:db8:1:2:ffff::9")))
        #expect(
            SourceAddressKey(InternetAddress(parsing: "2001:db8:1:2::1"))
                != SourceAddressKey(InternetAddress(parsing: "2001:db8:1:3::1")))
    }

    // MARK: Open-file limit

    @Test(
        arguments: [
            // (asked, soft, hard) -> (soft to set, connections served)
            (50_000, 1024, 524_288, 50_064, 50_000),
            (50_000, 20_000, 20_000, 20_000, 19_936),
            (50_000, 1024, 20_000, 20_000, 19_936),
            (50_000, 100_000, 100_000, 100_000, 50_000),
            (10, 10, 10, 10, 1),
        ] as [(Int, Int, Int, Int, Int)])
    func openFileLimitIsRaisedAndCapsTheConnections(asked: Int, soft: Int, hard: Int, softToSet: Int, served: Int) {
        let plan = OpenFileLimit.plan(maxConnections: asked, soft: soft, hard: hard)
        #expect(plan.softLimit == softToSet)
        #expect(plan.maxConnections == served)
        #expect(plan.isCapped == (served < asked))
    }
}
