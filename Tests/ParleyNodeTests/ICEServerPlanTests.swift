import Foundation
import ICE
import ParleyProtocol
import RendezvousWire
import Testing

@testable import ParleyNode

@Suite("ICE servers: flags, WELCOME services, invite hints")
struct ICEServerPlanTests {
    static let welcomeTURN = RendezvousService.turn(
        TURNCredential(ttlSeconds: 60, url: "turn:rv.example.org:3478?transport=udp", username: "1:a", password: "p"))

    @Test func welcomeServicesAreUsedWhenNoFlagsAreGiven() {
        let plan = ICEServerPlan.plan(
            settings: ICESettings(), services: [.stun("rv.example.org:3478"), Self.welcomeTURN], hints: [])
        #expect(plan.stun == PlannedServer(host: "rv.example.org", port: 3478))
        #expect(plan.turn == [PlannedServer(host: "rv.example.org", port: 3478, username: "1:a", password: "p")])
        #expect(plan.skipped.isEmpty)
    }

    @Test func flagsOverrideTheRendezvous() {
        var settings = ICESettings()
        settings.stun = "198.51.100.7:3479"
        settings.turn = .init(url: "turn:[2001:db8::1]:5000?transport=tcp", username: "u", password: "secret")
        let plan = ICEServerPlan.plan(settings: settings, services: [.stun("rv:3478"), Self.welcomeTURN], hints: [])
        #expect(plan.stun == PlannedServer(host: "198.51.100.7", port: 3479))
        #expect(
            plan.turn == [
                PlannedServer(host: "2001:db8::1", port: 5000, transport: .tcp, username: "u", password: "secret")
            ])
    }

    @Test func inviteHintsWithCredentialsAreAddedAndTLSGoesThroughATunnel() async throws {
        let hints = [
            try TURNHint(uri: "turn:relay.example.org", username: "long", password: "term"),
            try TURNHint(uri: "turn:nocreds.example.org"),
        ]
        let tls = RendezvousService.turn(
            TURNCredential(ttlSeconds: 60, url: "turns:rv.example.org:5349", username: "1:a", password: "p"))
        let plan = ICEServerPlan.plan(settings: ICESettings(), services: [tls], hints: hints)
        let overTLS = PlannedServer(
            host: "rv.example.org", port: 5349, transport: .tcp, tls: true, username: "1:a", password: "p")
        #expect(
            plan.turn == [
                overTLS, PlannedServer(host: "relay.example.org", port: 3478, username: "long", password: "term"),
            ])
        #expect(plan.skipped.isEmpty)
        // libnice is given the tunnel's loopback end, over TCP; the plain server as it is.
        let configuration = try await ICEServerPlan.configuration(plan, settings: ICESettings()) { host in
            IPAddress(host == "rv.example.org" ? "203.0.113.10" : "203.0.113.11")!
        } tunnel: { host, address, port in
            #expect(host == "rv.example.org" && address == IPAddress("203.0.113.10") && port == 5349)
            return ICEServerEndpoint(address: IPAddress("127.0.0.1")!, port: 40001)
        }
        #expect(configuration.turnServers.map(\.endpoint.description) == ["127.0.0.1:40001", "203.0.113.11:3478"])
        #expect(configuration.turnServers.map(\.transport) == [.tcp, .udp])
    }

    @Test func aTURNCAFileThatIsNotPEMIsRefusedAtStart() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("parley-not-pem-\(getpid())").path
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        var settings = ICESettings()
        settings.turnCA = path
        #expect(throws: NodeError.self) { try settings.validate() }
        settings.turnCA = "/nonexistent/parley-ca.pem"
        let error = #expect(throws: NodeError.self) { try settings.validate() }
        #expect(error?.description.hasPrefix("--turn-ca /nonexistent/parley-ca.pem") == true)
    }

    @Test(arguments: [
        ("203.0.113.10:3478", "203.0.113.10", UInt16(3478)),
        ("[2001:db8::1]:19302", "2001:db8::1", 19302),
        ("stun.example.org", "stun.example.org", 3478),
        ("[2001:db8::2]", "2001:db8::2", 3478),
    ])
    func hostAndPort(text: String, host: String, port: UInt16) throws {
        let parsed = try #require(ICEServerPlan.hostAndPort(text, defaultPort: 3478))
        #expect(parsed.host == host && parsed.port == port)
    }

    @Test(arguments: ["", ":3478", "host:0", "host:99999", "[::1", "[::1]x", "a:b:c"])
    func badHostAndPort(text: String) {
        #expect(ICEServerPlan.hostAndPort(text, defaultPort: 3478) == nil)
    }

    @Test func configurationResolvesNamesAndValidates() async throws {
        let plan = ICEServerPlan.plan(
            settings: ICESettings(), services: [.stun("rv.example.org:3478"), Self.welcomeTURN], hints: [])
        let configuration = try await ICEServerPlan.configuration(plan, settings: ICESettings()) { host in
            #expect(host == "rv.example.org")
            return IPAddress("203.0.113.10")!
        }
        #expect(configuration.stunServer?.description == "203.0.113.10:3478")
        #expect(configuration.turnServers.map(\.endpoint.description) == ["203.0.113.10:3478"])
        var relayOnly = ICESettings()
        relayOnly.relayOnly = true
        await #expect(throws: ICEError.self) {
            _ = try await ICEServerPlan.configuration(
                ICEServerPlan.plan(settings: relayOnly, services: [], hints: []), settings: relayOnly
            ) { _ in IPAddress("127.0.0.1")! }
        }
    }

    @Test func resolvingLiteralsAndLocalhost() async throws {
        #expect(try await resolveHost("198.51.100.1") == IPAddress("198.51.100.1"))
        #expect(try await resolveHost("localhost").isLoopback)
        await #expect(throws: NodeError.self) { _ = try await resolveHost("no-such-host.invalid") }
    }
}

@Suite("parleyd --host: the address in the invite")
struct AdvertisedHostTests {
    static let lan = IPAddress("192.168.1.20")!
    static let loopback = IPAddress("127.0.0.1")!
    static let linkLocal = IPAddress("169.254.3.4")!

    @Test(arguments: [
        // (listen host, --advertise, --local-address, interfaces, expected)
        ("0.0.0.0", "meet.example.org", [IPAddress](), [lan], "meet.example.org"),
        ("127.0.0.1", nil, [], [lan], "127.0.0.1"),
        ("0.0.0.0", nil, [loopback], [lan], "127.0.0.1"),
        ("0.0.0.0", nil, [], [loopback, linkLocal, lan], "192.168.1.20"),
        ("0.0.0.0", nil, [], [loopback], "127.0.0.1"),
        ("::", nil, [], [], "127.0.0.1"),
        ("rv.lan", nil, [], [lan], "rv.lan"),
    ])
    func advertised(listen: String, advertise: String?, local: [IPAddress], interfaces: [IPAddress], expected: String) {
        #expect(
            HostedRendezvous.advertisedHost(
                listenHost: listen, advertise: advertise, localAddresses: local, interfaces: interfaces) == expected)
    }

    @Test func thisMachineHasAnInterfaceUp() {
        #expect(HostedRendezvous.interfaceAddresses().contains { $0.isLoopback })
    }
}
