import ControlAPI
import MeetingCore
import ParleyProtocol
import Testing

/// The recording notice (PROTOCOL §14.2) on the core alone: who is told, what REPORTs carry,
/// what the user is shown.
@Suite("Recording notice")
struct RecordingNoticeTests {
    typealias Harness = MeetingCoreTests.Harness

    static func recordingControls(_ commands: [MeetingCommand]) -> [Bool] {
        commands.compactMap { command in
            guard case .sendControl(_, .recording(let value)) = command else { return nil }
            return value
        }
    }

    static func reportFlags(_ commands: [MeetingCommand]) -> [Bool] {
        commands.compactMap { command in
            guard case .sendReport(_, _, _, let recording) = command else { return nil }
            return recording
        }
    }

    static func recordingEvents(_ commands: [MeetingCommand]) -> [ControlEvent] {
        commands.compactMap { command in
            guard case .publish(let event) = command, event.kind == .recording else { return nil }
            return event
        }
    }

    static func warnings(_ commands: [MeetingCommand]) -> [String] {
        commands.compactMap { command in
            guard case .publish(let event) = command, event.kind == .warning else { return nil }
            return event.message
        }
    }

    /// Starting and stopping: RECORDING at once to a version-3 peer, its REPORTs carry the flag,
    /// the user sees their own state; a version-1 peer is never sent either, and is named instead.
    @Test(arguments: [
        // (peer's versions, RECORDING sent on start, REPORT flag while recording, warned)
        ([UInt8(1), 2, 3], [true], true, false),
        ([1, 2], [], false, true),
        ([1], [], false, true),
    ])
    func startingAndStopping(versions: [UInt8], sent: [Bool], flag: Bool, warned: Bool) {
        var harness = Harness()
        _ = MeetingCoreTests.upLink(&harness, versions: versions)
        let started = harness.feed(.setRecording(true))
        #expect(Self.recordingControls(started) == sent)
        #expect(Self.recordingEvents(started).map(\.state) == [.recordingStarted])
        #expect(Self.recordingEvents(started).first?.peer == nil)
        #expect(Self.warnings(started).contains { $0.contains("cannot be told that you record") } == warned)
        #expect(harness.core.membersNotToldOfRecording == (warned ? ["peer"] : []))
        #expect(harness.core.verification().recording.map(\.name) == ["me"])
        let report = harness.feed(.tick, after: 1.2)
        #expect(Self.reportFlags(report) == [flag])
        let stopped = harness.feed(.setRecording(false))
        #expect(Self.recordingControls(stopped) == sent.map { !$0 })
        #expect(Self.recordingEvents(stopped).map(\.state) == [.recordingStopped])
        #expect(Self.reportFlags(harness.feed(.tick, after: 1.2)) == [false])
        #expect(harness.core.verification().recording.isEmpty)
        // Saying it twice changes nothing and tells nobody again (the silent test link's own
        // timers may act meanwhile: that is not about recording).
        let again = harness.feed(.setRecording(false))
        #expect(Self.recordingControls(again).isEmpty && Self.recordingEvents(again).isEmpty)
        #expect(Self.warnings(again).isEmpty)
    }

    /// A peer's RECORDING and REPORT flag set its state on a version-3 link, each change shown
    /// once; on an older link both mean nothing.
    @Test(arguments: [([UInt8(1), 2, 3], true), ([1, 2], false)])
    func whatAPeerSays(versions: [UInt8], counts: Bool) {
        var harness = Harness()
        let id = MeetingCoreTests.upLink(&harness, versions: versions)
        let started = harness.feed(.session(id, .recording(true)))
        #expect(Self.recordingEvents(started).map(\.state) == (counts ? [.recordingStarted] : []))
        #expect(Self.recordingEvents(started).first?.name == (counts ? "peer" : nil))
        #expect(Self.recordingEvents(started).first?.peer == (counts ? harness.peer.peerIdentity.shortID : nil))
        #expect(harness.core.links.first?.recording == counts)
        #expect(harness.core.verification().recording.map(\.name) == (counts ? ["peer"] : []))
        // The same state again (in a REPORT) is no news.
        let repeated = harness.feed(
            .session(
                id,
                .report(
                    SessionControl.Report(timestampMs: 2, mediaReceived: 9, recording: true), rttMs: 10, mediaSent: 9)))
        #expect(Self.recordingEvents(repeated).isEmpty)
        // A REPORT without the flag ends it (the RECORDING that said so may have been lost).
        let ended = harness.feed(
            .session(id, .report(SessionControl.Report(timestampMs: 3, mediaReceived: 9), rttMs: 10, mediaSent: 9)))
        #expect(Self.recordingEvents(ended).map(\.state) == (counts ? [.recordingStopped] : []))
        #expect(harness.core.links.first?.recording == false)
    }

    /// A link that ends while its peer records says the recording ended for it; the peer's next
    /// link starts from "not recording".
    @Test func aLinkThatEndsEndsItsRecording() {
        var harness = Harness()
        let id = MeetingCoreTests.upLink(&harness, versions: [1, 2, 3])
        _ = harness.feed(.session(id, .recording(true)))
        let left = harness.feed(.session(id, .leave))
        #expect(Self.recordingEvents(left).map(\.state) == [.recordingStopped])
        #expect(harness.core.links.isEmpty)
    }

    /// While recording, a session that is established gets the flag in its first REPORT (a peer
    /// that joins later learns it at once), and an older peer that links is warned about.
    @Test(arguments: [([UInt8(1), 2, 3], true, false), ([1], false, true)])
    func aPeerThatJoinsWhileRecording(versions: [UInt8], flag: Bool, warned: Bool) {
        var harness = Harness()
        _ = harness.feed(.setRecording(true))
        let hello = harness.fromPeer(harness.hello(versions: versions))
        #expect(Self.warnings(hello).contains { $0.contains("cannot be told that you record") } == warned)
        let id = MeetingCoreTests.linkID(in: hello)!
        _ = harness.feed(.path(id, .created(PathCredentials(ufrag: "mine", password: "mypassword0123456789ab"))))
        #expect(Self.reportFlags(harness.feed(.session(id, .established))) == [flag])
    }
}
