/// Human-readable renderings of the control API's types, shared by the CLI and tests.
public enum StatusTable {
    public static func render(_ status: StatusReport) -> String {
        let node = status.node
        var lines: [String] = []
        lines.append(
            "\(node.name) (\(node.id)) · \(node.meeting.rawValue) · \(node.muted ? "muted" : "unmuted") · rendezvous: \(node.rendezvous.rawValue)"
                + (node.speaking ? " · speaking" : "")
        )
        if let input = node.input, let output = node.output { lines.append("input: \(input) · output: \(output)") }
        if let code = node.securityCode { lines.append("security code: \(code)") }
        if let rate = node.sendRate, rate.limited {
            // Only when the path sets the rate: that is when the user can do something about it.
            let congested = rate.congested.map { id in status.peers.first { $0.id == id }?.name ?? id }
            let path =
                rate.fanOut == nil
                ? " to each peer (the path takes about \(format(rate.estimateKbps, decimals: 0)) kb/s per peer, "
                    + "\(format(rate.uplinkKbps, decimals: 0)) kb/s in all)"
                : " (about \(format(rate.uplinkKbps, decimals: 0)) kb/s in all)"
            lines.append(
                "uplink limited: sending \(format(rate.opusKbps, decimals: 1)) kb/s of Opus in \(rate.packetMs) ms packets"
                    + path + (congested.isEmpty ? "" : "; congested: " + congested.joined(separator: ", ")))
        }
        if let member = node.sendRate?.fanOut {
            let name = status.peers.first { $0.id == member }?.name ?? member
            lines.append(
                "one copy up: your voice goes to \(name) once, who passes it on (your uplink cannot carry a copy per peer)"
            )
        }
        for peer in status.peers where peer.forgedPassedOn > 0 {
            // A member that alters what it passes on is attacking the meeting: say so, by name.
            lines.append(
                "! \(peer.forgedPassedOn) of \(peer.name)'s frames passed on by a member did not verify "
                    + "(altered or forged on the way): dropped")
        }
        if node.recording { lines.append("recording to \(node.recordingPath ?? "?")") }
        let recorders = status.peers.filter(\.recording).map(\.name)
        if !recorders.isEmpty { lines.append("recording the meeting: " + recorders.joined(separator: ", ")) }
        if !node.relaying.isEmpty {
            let names = Dictionary(status.peers.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
            let pairs = node.relaying.map { pair in pair.map { names[$0] ?? $0 }.joined(separator: " ↔ ") }
            lines.append("relaying for: " + pairs.joined(separator: ", "))
        }
        guard !status.peers.isEmpty else {
            lines.append(node.meeting == .idle ? "not in a meeting" : "no peers yet")
            return lines.joined(separator: "\n")
        }
        let header = [
            "PEER", "NAME", "TALK", "STATE", "ROUTE", "RTT", "LOSS", "JITTER", "RX kb/s", "TX kb/s", "CONCEALED",
            "VOLUME",
        ]
        let names = Dictionary(status.peers.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
        let rows = status.peers.map { peer -> [String] in
            let rtt = peer.rttMs.map { format($0, decimals: 0) + " ms" } ?? "-"
            let loss = peer.lossPct.map { format($0, decimals: 1) + " %" } ?? "-"
            let jitter = peer.jitterMs.map { format($0, decimals: 1) + " ms" } ?? "-"
            let concealed = format(peer.concealedMs, decimals: 0) + " ms"
            let rx = format(peer.rxKbps, decimals: 1)
            let tx = format(peer.txKbps, decimals: 1)
            let route = peer.via.map { via in "peer (\(names[via] ?? via))" } ?? peer.route ?? "-"
            let state = peer.state == .failed ? "failed: \(peer.reason ?? "?")" : peer.state.rawValue
            let volume = peer.volumePct == 0 ? "muted" : "\(peer.volumePct) %"
            return [
                peer.id, peer.name, peer.speaking ? speakingMark : "", state, route, rtt, loss, jitter, rx, tx,
                concealed,
                volume,
            ]
        }
        lines += table([header] + rows)
        return lines.joined(separator: "\n")
    }

    /// In the TALK column: the peer is heard speaking right now.
    public static let speakingMark = "●"

    /// Left-aligned columns separated by two spaces.
    static func table(_ rows: [[String]]) -> [String] {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count)
            }.joined(separator: "  ")
        }
    }

    /// Fixed-point formatting without Foundation.
    public static func format(_ value: Double, decimals: Int) -> String {
        guard value.isFinite else { return "-" }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = Int(scaled / scale)
        let fraction = Int(scaled) - whole * Int(scale)
        let sign = value < 0 && scaled != 0 ? "-" : ""
        guard decimals > 0 else { return "\(sign)\(whole)" }
        let digits = String(fraction)
        return "\(sign)\(whole)." + String(repeating: "0", count: decimals - digits.count) + digits
    }
}

/// One line per `watch` event.
public enum EventLine {
    public static func render(_ event: ControlEvent) -> String {
        let who = [event.name, event.peer.map { "(\($0))" }].compactMap { $0 }.joined(separator: " ")
        switch event.kind {
        case .peerJoined: return "+ \(who) joined"
        case .peerLeft: return "- \(who) left" + (event.message.map { ": \($0)" } ?? "")
        case .link:
            return "~ \(who) link \(event.state?.rawValue ?? "?")" + (event.route.map { " via \($0)" } ?? "")
                + (event.message.map { ": \($0)" } ?? "")
        case .speaking:
            let speakers = event.speaking ?? []
            return speakers.isEmpty ? "  nobody speaking" : "  speaking: " + speakers.joined(separator: ", ")
        case .muted: return event.state == .muted ? "  you are muted" : "  you are unmuted"
        case .meeting: return "* meeting \(event.state?.rawValue ?? "")" + (event.message.map { ": \($0)" } ?? "")
        case .securityCode: return "! security code is now \(event.message ?? "?") (membership changed)"
        case .warning: return "! \(event.message ?? "")"
        case .chat:
            return ChatLine.render(
                ChatMessage(
                    time: event.time ?? "", from: event.peer ?? "?", name: event.name ?? "?", text: event.message ?? "")
            )
        case .device: return "♪ \(event.message ?? "")"
        case .recording:
            let what = event.state == .recordingStarted ? "started recording" : "stopped recording"
            return "● \(event.peer == nil ? "you" : who) \(what)" + (event.message.map { ": \($0)" } ?? "")
        }
    }
}

/// One chat message for people: `[14:02:03] alice (3f2a9c01): text`, continuation lines indented.
public enum ChatLine {
    public static func render(_ message: ChatMessage) -> String {
        let lines = message.text.split(separator: "\n", omittingEmptySubsequences: false)
        return "[\(ChatTime.localClock(message.time))] \(message.name) (\(message.from)): "
            + lines.joined(separator: "\n    ")
    }
}
