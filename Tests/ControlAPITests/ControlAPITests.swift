import ControlAPI
import Foundation
import Testing

@Suite("Control API messages")
struct ControlAPITests {
    static let peer = PeerStatus(
        id: "a1b2c3d4", name: "alice", state: .up, route: "host", rttMs: 1.4, lossPct: 0.5, jitterMs: 2.25,
        rxKbps: 32.1, txKbps: 31.9, packetsRx: 500, packetsTx: 498, concealedMs: 40, skippedMs: 20,
        latencyMs: ReceiveLatency(network: 0.7, jitterBuffer: 14.5, jitterTarget: 0, mix: 0.1, playback: nil))
    static let status = StatusReport(
        node: NodeStatus(
            id: "00ff00ff", name: "bob", muted: false, meeting: .inMeeting, invite: "parley1:x",
            securityCode: "1234 5678 9012", rendezvous: .connected,
            latencyMs: SendLatency(capture: nil, frame: 20, lookahead: 6.5, denoise: 0, process: 0.5, send: 0.25)),
        peers: [peer, PeerStatus(id: "deadbeef", name: "carol", state: .checking)])

    @Test func statusJSONHasTheDocumentedShapeWithNullsForUnknowns() throws {
        let line = try ControlCodec.line(Self.status)
        let object = try #require(JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        let node = try #require(object["self"] as? [String: Any])
        #expect(
            Set(node.keys) == [
                "id", "name", "muted", "meeting", "invite", "security_code", "rendezvous", "relaying", "speaking",
                "input", "output", "recording", "recording_path", "latency_ms", "send_rate",
            ])
        #expect(node["recording"] as? Bool == false)
        #expect(node["recording_path"] is NSNull)
        // The latency budget: every stage present, null for one not measured, and the total.
        let sending = try #require(node["latency_ms"] as? [String: Any])
        #expect(Set(sending.keys) == ["capture", "frame", "lookahead", "denoise", "process", "send", "total"])
        #expect(sending["capture"] is NSNull)
        #expect(sending["total"] as? Double == 27.25)
        let peers = try #require(object["peers"] as? [[String: Any]])
        let expectedKeys: Set<String> = [
            "id", "name", "state", "route", "via", "reason", "rtt_ms", "loss_pct", "jitter_ms", "rx_kbps", "tx_kbps",
            "packets_rx", "packets_tx", "concealed_ms", "skipped_ms", "speaking", "volume_pct", "recording",
            "latency_ms",
            "queue_delay_ms", "forged_passed_on",
        ]
        #expect(Set(peers[0].keys) == expectedKeys)
        #expect(Set(peers[1].keys) == expectedKeys)
        let receiving = try #require(peers[0]["latency_ms"] as? [String: Any])
        #expect(Set(receiving.keys) == ["network", "jitter_buffer", "jitter_target", "mix", "playback", "total"])
        #expect(receiving["playback"] is NSNull)
        #expect(receiving["total"] as? Double == 15.3)
        #expect(peers[1]["latency_ms"] is NSNull)
        #expect(peers[1]["route"] is NSNull)
        #expect(peers[0]["rtt_ms"] as? Double == 1.4)
        #expect(peers[0]["packets_rx"] as? Int == 500)
        #expect(peers[0]["skipped_ms"] as? Double == 20)
        #expect(peers[1]["skipped_ms"] as? Double == 0)
    }

    @Test func messagesRoundTripAsSingleLines() throws {
        for request in [
            ControlRequest(.status), ControlRequest(.join, invite: "parley1:abc\ndef"),
            ControlRequest(.recordStart, path: "/tmp/a b.opus"), ControlRequest(.recordStop),
        ] {
            let line = try ControlCodec.line(request)
            #expect(line.last == UInt8(ascii: "\n"))
            #expect(line.dropLast().firstIndex(of: UInt8(ascii: "\n")) == nil)
            #expect(try ControlCodec.decode(ControlRequest.self, from: line) == request)
        }
        let response = ControlResponse.success(status: Self.status)
        #expect(try ControlCodec.decode(ControlResponse.self, from: ControlCodec.line(response)) == response)
    }

    @Test(arguments: ["", "{", "[]", "{\"version\":1}", "{\"version\":1,\"method\":\"dance\"}"])
    func malformedRequestsAreClearErrors(text: String) {
        #expect(throws: ControlError.self) { try ControlCodec.decode(ControlRequest.self, from: Array(text.utf8)) }
    }

    @Test(arguments: [("50", 50), ("50%", 50), ("0 %", 0), ("200", 200)])
    func volumesParse(text: String, percent: Int) {
        #expect(PeerVolume.percent(parsing: text) == percent)
    }

    @Test(arguments: ["", "201", "-1", "half", "50.5", "%"])
    func badVolumesAreRefused(text: String) {
        #expect(PeerVolume.percent(parsing: text) == nil)
    }

    @Test func theTableMarksWhoIsSpeakingAndTheirVolume() {
        var status = Self.status
        status.peers[0].speaking = true
        status.peers[1].volumePct = 0
        let lines = StatusTable.render(status).split(separator: "\n")
        #expect(lines[3].contains(StatusTable.speakingMark) && lines[3].hasSuffix("100 %"))
        #expect(!lines[4].contains(StatusTable.speakingMark) && lines[4].hasSuffix("muted"))
    }

    @Test func humanTableShowsEveryPeer() {
        let text = StatusTable.render(Self.status)
        #expect(text.contains("security code: 1234 5678 9012"))
        let lines = text.split(separator: "\n")
        #expect(lines.count == 5)  // summary, code, header, two peers
        #expect(lines[3].hasPrefix("a1b2c3d4  alice"))
        #expect(lines[3].contains("1 ms") && lines[3].contains("0.5 %") && lines[3].contains("32.1"))
        #expect(lines[4].contains("checking") && lines[4].contains(" - "))
    }

    /// The table says when the uplink, not the configured bitrate, sets what this node sends.
    @Test func aLimitedUplinkIsShown() {
        var status = Self.status
        status.node.sendRate = SendRateStatus(
            estimateKbps: 36.5, uplinkKbps: 73, limited: false, opusKbps: 32, packetMs: 20, copies: 0, congested: [])
        #expect(!StatusTable.render(status).contains("uplink"))
        status.node.sendRate = SendRateStatus(
            estimateKbps: 36.5, uplinkKbps: 73, limited: true, opusKbps: 22.3, packetMs: 40, copies: 0,
            congested: ["a1b2c3d4"])
        let line = StatusTable.render(status).split(separator: "\n").first { $0.hasPrefix("uplink") }
        #expect(
            line
                == "uplink limited: sending 22.3 kb/s of Opus in 40 ms packets to each peer (the path takes about 37 kb/s per peer, 73 kb/s in all); congested: alice"
        )
        let json = try! ControlCodec.line(status)
        #expect(String(decoding: json, as: UTF8.self).contains("\"send_rate\":{"))
        #expect(!String(decoding: json, as: UTF8.self).contains("fan_out"))
    }

    /// While one copy goes up through a member (PROTOCOL §15) the table says through whom, and the
    /// JSON names the member.
    @Test func oneCopyUpIsShown() throws {
        var status = Self.status
        status.node.sendRate = SendRateStatus(
            estimateKbps: 50, uplinkKbps: 50, limited: true, opusKbps: 24, packetMs: 20, copies: 0, congested: [],
            fanOut: "a1b2c3d4")
        let lines = StatusTable.render(status).split(separator: "\n")
        #expect(lines.contains("uplink limited: sending 24.0 kb/s of Opus in 20 ms packets (about 50 kb/s in all)"))
        #expect(
            lines.contains(
                "one copy up: your voice goes to alice once, who passes it on (your uplink cannot carry a copy per peer)"
            ))
        let json = String(decoding: try ControlCodec.line(status), as: UTF8.self)
        #expect(json.contains("\"fan_out\":\"a1b2c3d4\""))
        let decoded = try ControlCodec.decode(StatusReport.self, from: Array(json.utf8))
        #expect(decoded.node.sendRate?.fanOut == "a1b2c3d4")
    }

    /// A member that alters or makes up frames it passes on (§15.2) is named in status: the
    /// frames are dropped, and the people in the meeting should know someone tampers.
    @Test func framesForgedOnTheWayAreShown() throws {
        var status = Self.status
        #expect(!StatusTable.render(status).contains("did not verify"))
        status.peers[0].forgedPassedOn = 3
        let lines = StatusTable.render(status).split(separator: "\n")
        #expect(
            lines.contains(
                "! 3 of \(status.peers[0].name)'s frames passed on by a member did not verify (altered or forged on the way): dropped"
            ))
        let json = String(decoding: try ControlCodec.line(status), as: UTF8.self)
        #expect(json.contains("\"forged_passed_on\":3"))
        #expect(try ControlCodec.decode(StatusReport.self, from: Array(json.utf8)).peers[0].forgedPassedOn == 3)
    }

    @Test(arguments: [
        (1.44, 1, "1.4"), (1.45, 1, "1.5"), (0.0, 2, "0.00"), (-2.5, 0, "-3"), (32.06, 1, "32.1"), (100.0, 0, "100"),
        (0.004, 2, "0.00"), (-0.004, 2, "0.00"), (7.05, 2, "7.05"),
    ])
    func fixedPointFormatting(value: Double, decimals: Int, expected: String) {
        #expect(StatusTable.format(value, decimals: decimals) == expected)
    }

    @Test func eventLinesReadNaturally() {
        #expect(
            EventLine.render(ControlEvent(kind: .peerJoined, peer: "ab12", name: "alice")) == "+ alice (ab12) joined")
        #expect(
            EventLine.render(ControlEvent(kind: .link, peer: "ab12", name: "alice", state: .init(.up), route: "relay"))
                == "~ alice (ab12) link up via relay")
        #expect(EventLine.render(ControlEvent(kind: .speaking, speaking: [])) == "  nobody speaking")
    }
}

@Suite("Chat on the control API")
struct ChatControlAPITests {
    static let message = ChatMessage(
        time: "2023-11-14T22:13:20.123Z", from: "a1b2c3d4", name: "alice", text: "hello\nsecond line")

    /// `status --json` carries `"chat"`: time, from, name, text; a status from before chat
    /// existed reads as no messages.
    @Test func statusCarriesTheChat() throws {
        var status = ControlAPITests.status
        status.chat = [Self.message]
        let line = try ControlCodec.line(status)
        let object = try #require(JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        let chat = try #require(object["chat"] as? [[String: Any]])
        #expect(chat.count == 1 && Set(chat[0].keys) == ["time", "from", "name", "text"])
        #expect(try ControlCodec.decode(StatusReport.self, from: line) == status)
        var older = try #require(JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        older["chat"] = nil
        let decoded = try ControlCodec.decode(
            StatusReport.self, from: Array(try JSONSerialization.data(withJSONObject: older)))
        #expect(decoded.chat.isEmpty)
        let request = ControlRequest(.say, text: "hi")
        #expect(try ControlCodec.decode(ControlRequest.self, from: ControlCodec.line(request)) == request)
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"),
        (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
        (951_782_400_999, "2000-02-29T00:00:00.999Z"),  // a leap day of a century leap year
        (4_102_444_799_000, "2099-12-31T23:59:59.000Z"),
    ])
    func timesAreRFC3339UTC(milliseconds: Int64, text: String) {
        #expect(ChatTime.format(unixMilliseconds: milliseconds) == text)
        #expect(ChatTime.unixSeconds(text) == milliseconds / 1000)
    }

    @Test(arguments: ["", "2023-11-14 22:13:20.123Z", "2023-13-14T22:13:20.123Z", "2023-11-14T22:13:20.12xZ"])
    func malformedTimesAreNotRead(text: String) {
        #expect(ChatTime.unixSeconds(text) == nil)
        #expect(ChatTime.localClock(text) == text)
    }

    /// `[HH:MM:SS] name (id): text`, the lines after the first indented; watch prints the same.
    @Test func chatLinesShowTimeAndSender() {
        let line = ChatLine.render(Self.message)
        #expect(line.hasPrefix("["))
        #expect(line.hasSuffix("] alice (a1b2c3d4): hello\n    second line"))
        let clock = line.dropFirst().prefix(8)
        #expect(clock.count == 8 && clock.filter { $0 == ":" }.count == 2)
        let event = ControlEvent(
            kind: .chat, peer: "a1b2c3d4", name: "alice", message: "hello\nsecond line", time: Self.message.time)
        #expect(EventLine.render(event) == line)
    }
}
