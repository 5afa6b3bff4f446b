import ICE
import ICETestSupport

/// One row of the NAT matrix: two lab hosts, which relay they may use, what must happen.
struct LabScenario: Sendable {
    enum Relay: String, Sendable {
        case none = "-"
        case udp = "TURN/UDP"
        case tcp = "TURN/TCP"
    }

    enum Expectation: Sendable, CustomStringConvertible {
        case route(ICERoute)
        case failure(ICEFailure)

        var description: String {
            switch self {
            case .route(let route): route.rawValue
            case .failure: "fails"
            }
        }
    }

    /// What is done to the path once it works.
    enum Trial: Sendable {
        /// Connect and measure RTT.
        case connect
        /// Drop a fraction of the packets each router forwards (iptables statistic); measure delivery.
        case loss(Double)
        /// Cap the routers' WAN egress (tc tbf); compare a burst's delivery before and after.
        case rateCap(String)
        /// Forget both routers' NAT mappings (conntrack -F), then restart ICE.
        case flushThenRestart
        /// Give a router a new public address (mappings move), then restart ICE.
        case rebindThenRestart
    }

    let name: String
    let a: String
    let b: String
    var relay: Relay = .none
    var relayOnly = false
    let expected: Expectation
    var trial: Trial = .connect
    /// Routers on the path (for impairments and flushes).
    var routers: [String] = []
}

extension LabScenario {
    /// The NAT matrix (docs/DEVELOPING.md, "NAT lab"): every NAT pairing without and with TURN, then the
    /// relay-only, TURN/TCP, impaired and restart trials.
    static let matrix: [LabScenario] = {
        let pairs: [(String, String, String, ICERoute?)] = [
            ("public–public", "pub", "pub2", .direct),
            ("public–cone", "pub", "c1a", .direct),
            ("public–symmetric", "pub", "s1", .direct),
            ("cone–cone", "c1a", "c2", .direct),
            ("cone–symmetric", "c1a", "s1", nil),
            ("symmetric–symmetric", "s1", "s2", nil),
            ("same LAN (one cone NAT)", "c1a", "c1b", .direct),
        ]
        var scenarios: [LabScenario] = []
        for (name, a, b, direct) in pairs {
            scenarios.append(
                LabScenario(
                    name: name, a: a, b: b, expected: direct.map { .route($0) } ?? .failure(.noDirectPathNeedsRelay)))
            scenarios.append(LabScenario(name: name, a: a, b: b, relay: .udp, expected: .route(direct ?? .relayed)))
        }
        scenarios += [
            LabScenario(name: "symmetric–symmetric", a: "s1", b: "s2", relay: .tcp, expected: .route(.relayed)),
            LabScenario(
                name: "cone–cone, relay-only", a: "c1a", b: "c2", relay: .udp, relayOnly: true,
                expected: .route(.relayed)),
            LabScenario(
                name: "symmetric–symmetric, relay-only", a: "s1", b: "s2", relay: .udp, relayOnly: true,
                expected: .route(.relayed)),
            LabScenario(
                name: "cone–cone, 20% loss per router", a: "c1a", b: "c2", expected: .route(.direct),
                trial: .loss(0.2), routers: ["cone1", "cone2"]),
            LabScenario(
                name: "cone–cone, 256 kbit/s cap one way", a: "c1a", b: "c2", expected: .route(.direct),
                trial: .rateCap("256kbit"), routers: ["cone1"]),
            LabScenario(
                name: "cone–cone, conntrack -F, restart", a: "c1a", b: "c2", expected: .route(.direct),
                trial: .flushThenRestart, routers: ["cone1", "cone2"]),
            LabScenario(
                name: "cone–cone, new WAN address, restart", a: "c1a", b: "c2", expected: .route(.direct),
                trial: .rebindThenRestart, routers: ["cone1"]),
            LabScenario(
                name: "cone–symmetric, sym NAT flushed, restart", a: "c1a", b: "s1", relay: .udp,
                expected: .route(.relayed), trial: .flushThenRestart, routers: ["sym1"]),
        ]
        return scenarios
    }()
}

/// What one scenario measured.
struct LabResult: Sendable {
    let scenario: LabScenario
    var outcome = "-"
    var pair = "-"
    var connectedIn: Duration?
    var roundTrip: Duration?
    var detail = ""
    var problems: [String] = []
    var passed: Bool { problems.isEmpty }
}
