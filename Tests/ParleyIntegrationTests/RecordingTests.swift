import ControlAPI
import NodeLab
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `parley record` with real daemons (PROTOCOL §14.2): the recording is announced to everyone,
/// holds what the recorder heard and said, is a valid Ogg Opus file (opus-tools' `opusinfo` and
/// `opusdec`, from Debian), and survives `kill -9` of the daemon that writes it.
@Suite(.serialized, .enabled(if: TestEnvironment.shouldRun(needing: NodeLab.binariesBuilt)))
struct RecordingTests {
    let meetings = MeetingTests()

    static func events(_ watch: ChildProcess) -> [ControlEvent] {
        watch.standardOutput.split(separator: "\n").compactMap {
            try? ControlCodec.decode(ControlEvent.self, from: Array($0.utf8))
        }
    }

    static func recordingEvent(_ watch: ChildProcess, of name: String, _ state: EventState) -> Bool {
        events(watch).contains { $0.kind == .recording && $0.name == name && $0.state == state }
    }

    /// Decodes an Ogg Opus file to raw 48 kHz samples with opusdec.
    static func decode(_ lab: NodeLab, _ path: String) throws -> [Int16] {
        let raw = path + ".raw"
        let decoded = try lab.run("/usr/bin/opusdec", ["--quiet", "--rate", "48000", path, raw])
        #expect(decoded.status == 0, "opusdec: \(decoded.error)")
        return try Hearing.rawSamples(raw)
    }

    static func mode(_ path: String) -> mode_t {
        var info = stat()
        guard stat(path, &info) == 0 else { return 0 }
        return info.st_mode & 0o777
    }

    @Test func aRecordingIsAnnouncedToEveryoneAndHoldsTheMeeting() async throws {
        try await meetings.withLab("record") { lab in
            let (_, _, nodes) = try MeetingTests.threeNodeMeeting(lab)
            let (alice, bob, carol) = (nodes[0], nodes[1], nodes[2])
            let watches = try [bob, carol].map { try $0.watch() }
            let path = "\(lab.directory)/meeting.opus"
            let recordedFrom = alice.samplesHeard
            let asked = ContinuousClock.now
            let started = try alice.parley(["record", "start", path])
            let answered = ContinuousClock.now
            #expect(started.status == 0, "\(started.error)")
            #expect(started.output.contains("recording to \(path)"))
            for watch in watches {
                try LabWait.until(.seconds(5), "\(watch.name): alice started recording", every: .milliseconds(5)) {
                    Self.recordingEvent(watch, of: "alice", .recordingStarted)
                }
            }
            let noticed = ContinuousClock.now
            print(
                "recording notice: `parley record start` answered in \(answered - asked); both others' watch "
                    + "showed it \(noticed - answered) after the answer")

            #expect(try alice.statusFromCLI().node.recording)
            #expect(try alice.statusFromCLI().node.recordingPath == path)
            for node in [bob, carol] {
                let status = try node.statusFromCLI()
                #expect(status.peers.first { $0.name == "alice" }?.recording == true, "\(node.name)")
                #expect(status.peers.first { $0.name != "alice" }?.recording == false, "\(node.name)")
                #expect(!status.node.recording)
                let verify = try node.parley(["verify"])
                #expect(verify.output.contains("recording the meeting now:"), "\(verify.output)")
                let table = try node.parley(["status"])
                #expect(table.output.contains("recording the meeting: alice"), "\(table.output)")
            }
            // Errors are one line each and change nothing.
            let again = try alice.parley(["record", "start", "\(lab.directory)/again.opus"])
            #expect(again.status != 0 && again.error.trimmed == "parley: already recording to \(path)")
            let taken = try carol.parley(["record", "start", path])
            #expect(taken.status != 0 && taken.error.contains("already exists"), "\(taken.error)")
            let nowhere = try carol.parley(["record", "start", "/nonexistent-directory/x.opus"])
            #expect(nowhere.status != 0 && nowhere.error.contains("No such file or directory"), "\(nowhere.error)")
            #expect(try carol.parley(["record", "stop"]).error.trimmed == "parley: not recording")

            // Three seconds of meeting into the file, then stop.
            try LabWait.until(.seconds(20), "3 s of recording") {
                alice.samplesHeard >= recordedFrom + 3 * Hearing.sampleRate
            }
            let stopped = try alice.parley(["record", "stop"])
            #expect(stopped.status == 0 && stopped.output.contains("stopped recording: \(path)"), "\(stopped.output)")
            for watch in watches {
                try LabWait.until(.seconds(5), "\(watch.name): alice stopped recording") {
                    Self.recordingEvent(watch, of: "alice", .recordingStopped)
                }
            }
            #expect(try bob.statusFromCLI().peers.first { $0.name == "alice" }?.recording == false)

            #expect(Self.mode(path) == 0o600)
            let info = try lab.run("/usr/bin/opusinfo", [path])
            #expect(info.status == 0, "opusinfo: \(info.output) \(info.error)")
            let samples = try Self.decode(lab, path)
            // The 3 s were counted from before `record start`: the answer, a writer period and the
            // encoder's pre-skip come off them.
            #expect(samples.count >= 5 * Hearing.sampleRate / 2, "\(samples.count) samples")
            // The first half second skipped: the links' audio was already flowing, but leave the
            // encoder and the jitter buffers' first frames out of the measure.
            let heard = Hearing.heard(
                in: Array(samples.dropFirst(Hearing.sampleRate / 2)), tones: MeetingTests.tones,
                threshold: MeetingTests.threshold)
            #expect(heard == ["alice", "bob", "carol"], "the recording holds \(heard.sorted())")

            let speakers = "\(lab.directory)/meeting.speakers.txt"
            #expect(Self.mode(speakers) == 0o600)
            let lines = try lab.run("/bin/cat", [speakers]).output.split(separator: "\n")
            #expect(lines.first?.hasPrefix("# who spoke when") == true)
            #expect(lines.dropFirst().contains { $0.contains("alice") && $0.contains("bob") && $0.contains("carol") })
        }
    }

    /// `kill -9` of the recording daemon leaves a file every Ogg Opus reader accepts, holding the
    /// audio up to about the kill.
    @Test func aKilledRecorderLeavesAPlayableFile() async throws {
        try await meetings.withLab("record-kill") { lab in
            let (_, _, nodes) = try MeetingTests.threeNodeMeeting(lab, names: ["alice", "bob"])
            let alice = nodes[0]
            let path = "\(lab.directory)/killed.opus"
            #expect(try alice.parley(["record", "start", path]).status == 0)
            // Counted from the answer: the recording has started by then (counted from before the
            // command, a loaded machine's answer time came off the 2 s: 1.43 s in one clean run).
            let from = alice.samplesHeard
            try LabWait.until(.seconds(20), "2 s of recording") { alice.samplesHeard >= from + 2 * Hearing.sampleRate }
            alice.process.kill9()
            let info = try lab.run("/usr/bin/opusinfo", [path])
            #expect(info.status == 0, "opusinfo: \(info.output) \(info.error)")
            let samples = try Self.decode(lab, path)
            // At most about half a second lost: one page (0.25 s) and the frames in flight.
            #expect(samples.count >= Hearing.sampleRate * 3 / 2, "\(samples.count) samples")
            let heard = Hearing.heard(
                in: Array(samples.dropFirst(Hearing.sampleRate / 2)), tones: MeetingTests.tones,
                threshold: MeetingTests.threshold)
            #expect(heard == ["alice", "bob"], "the recording holds \(heard.sorted())")
            try nodes[1].waitForPeersUp(0, limit: .seconds(10))
        }
    }

    /// Without a meeting there is nothing to record.
    @Test func recordingOutsideAMeetingIsRefused() async throws {
        try await meetings.withLab("record-idle") { lab in
            let idle = try lab.node(NodeSpec(name: "alice", input: "silence"))
            let refused = try idle.parley(["record", "start"])
            #expect(refused.status != 0 && refused.error.trimmed == "parley: not in a meeting", "\(refused.error)")
            #expect(try idle.parley(["record", "stop"]).error.trimmed == "parley: not in a meeting")
        }
    }
}
