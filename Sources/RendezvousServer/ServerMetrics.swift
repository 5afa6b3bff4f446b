internal import Prometheus
internal import RendezvousWire

/// The server's Prometheus metrics, in a registry of its own (no global metrics system, so two
/// servers in one process, as in tests or `parleyd --host`, keep separate counts).
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let connections: Gauge
    let members: Gauge
    let rooms: Gauge
    let maxConnections: Gauge
    let connectionsAccepted: Counter
    let messagesReceived: Counter
    let messagesRelayed: Counter
    let stunResponses: Counter
    private let rejections: [UInt16: Counter]

    init() {
        func name(_ metric: String, unit: String = "", _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(
                namespace: "parley", subsystem: "rendezvous", metricName: metric, unitName: unit, helpText: help)
        }
        connections = registry.makeGauge(descriptor: name("connections", "Open connections (upgraded or not)."))
        members = registry.makeGauge(descriptor: name("members", "Admitted members in all rooms."))
        rooms = registry.makeGauge(descriptor: name("rooms", "Rooms with at least one member."))
        maxConnections = registry.makeGauge(
            descriptor: name("max_connections", "The connection limit (--max-connections, capped by open files)."))
        connectionsAccepted = registry.makeCounter(
            descriptor: name("connections_accepted", unit: "total", "TCP connections accepted."))
        messagesReceived = registry.makeCounter(
            descriptor: name("messages_received", unit: "total", "SEND messages accepted from members."))
        messagesRelayed = registry.makeCounter(
            descriptor: name("messages_relayed", unit: "total", "DELIVER messages written to members."))
        stunResponses = registry.makeCounter(
            descriptor: name("stun_responses", unit: "total", "STUN Binding responses sent."))
        var rejections: [UInt16: Counter] = [:]
        for code in RendezvousErrorCode.allKnown {
            rejections[code.rawValue] = registry.makeCounter(
                descriptor: name("rejections", unit: "total", "Connections closed with an ERROR, by reason."),
                labels: [("reason", code.name)])
        }
        self.rejections = rejections
    }

    func rejected(_ code: RendezvousErrorCode) {
        rejections[code.rawValue]?.increment()
    }

    /// The Prometheus text exposition format (version 0.0.4).
    func render() -> [UInt8] { registry.emitToBuffer() }
}
