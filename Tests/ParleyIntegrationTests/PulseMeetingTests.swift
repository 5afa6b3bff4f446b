import ControlAPI
import NodeLab
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A node on a real PulseAudio server with its default devices (what `parleyd` uses when given
/// no `--audio-in`/`--audio-out`): Scripts/test runs these under Scripts/with-pulseaudio, whose
/// null sinks stand in for a microphone (`parley_mic`, recorded through its monitor) and a speaker
/// (`parley_speaker`). And a node with no sound server: it says so and joins without sound.
@Suite(.serialized, .enabled(if: TestEnvironment.shouldRun(needing: NodeLab.binariesBuilt)))
struct PulseMeetingTests {
    static var pulseServer: String? { TestEnvironment.environment("PULSE_SERVER") }
    static var microphone: String { TestEnvironment.environment("PARLEY_PULSE_MIC") ?? "parley_mic" }
    static var speaker: String { TestEnvironment.environment("PARLEY_PULSE_SPEAKER") ?? "parley_speaker" }

    @Test(.enabled(if: TestEnvironment.shouldRun(needing: pulseServer != nil)))
    func defaultDevicesArePulseAudio() async throws {
        let lab = try NodeLab("pulse")
        do {
            try await withTimeout(.seconds(90), "a meeting on PulseAudio") {
                try await runBlocking { try Self.meeting(lab) }
            }
        } catch {
            Issue.record("\(error)\n\(lab.logs(of: ["alice", "bob", "rendezvous", "paplay", "parecord"]))")
        }
        await runBlockingQuietly { lab.shutdown() }
    }

    static func meeting(_ lab: NodeLab) throws {
        // What "someone says into the microphone": 440 Hz bursts played into the mic sink.
        let said = "\(lab.directory)/alice-says.wav"
        try Hearing.writeTone(said, hertz: 440, dBFS: -10, seconds: 60, burst: (on: 0.4, off: 0.2))
        let player = try lab.spawn("paplay", "/usr/bin/paplay", ["--device=\(microphone)", said])
        defer { player.kill9() }

        let rendezvous = try lab.rendezvous()
        let invite = try lab.invite(rendezvous: rendezvous.url)
        // No audio flags: PulseAudio's default source and sink, which PULSE_SOURCE and PULSE_SINK
        // (libpulse's own variables) point at the test's null sinks.
        var aliceSpec = NodeSpec(name: "alice", input: nil, join: invite)
        aliceSpec.environment = ["PULSE_SOURCE": "\(microphone).monitor", "PULSE_SINK": speaker]
        let alice = try lab.node(aliceSpec)
        let bob = try lab.node(NodeSpec(name: "bob", input: "tone:660", join: invite))
        try alice.waitForPeersUp(1)
        try bob.waitForPeersUp(1)
        #expect(!alice.process.standardError.contains("no PulseAudio"), "alice found the server")

        let recording = "\(lab.directory)/speaker.raw"
        let recorder = try lab.spawn(
            "parecord", "/usr/bin/parecord",
            ["--device=\(speaker).monitor", "--rate=48000", "--channels=1", "--format=s16le", "--raw", recording])
        // A share of 100 ms blocks: the bursts fill two thirds of them, and a loaded machine's
        // gap must not read as "not heard" (the median block would).
        let heard = try ListeningWindow([bob]).shares(
            [bob], seconds: 3, skipping: 0.5, tones: ["alice": 440, "bob": 660],
            threshold: Hearing.expectedPower(dBFS: -10) / 8)["bob"]
        recorder.kill9()  // raw samples need no trailer; parecord is slow to honour SIGINT/SIGTERM
        #expect(
            heard?["alice"] ?? 0 >= 0.3 && heard?["bob"] == 0,
            "bob hears what alice's microphone picked up: \(String(describing: heard))")
        let played = try Hearing.rawSamples(recording)
        #expect(played.count > Hearing.sampleRate, "\(played.count) samples recorded")
        let fromSpeaker = Hearing.heard(
            in: Array(played.suffix(2 * Hearing.sampleRate)), tones: ["alice": 440, "bob": 660],
            threshold: Hearing.expectedPower(dBFS: -10) / 8)
        #expect(fromSpeaker == ["bob"], "alice's speaker plays bob (and not her own microphone)")
    }

    /// No sound server: one clear warning, and the node still joins (silence in, nothing out).
    @Test func noSoundServerWarnsAndJoinsWithoutSound() async throws {
        let lab = try NodeLab("nopulse")
        do {
            try await withTimeout(.seconds(60), "a node without a sound server") {
                try await runBlocking {
                    let rendezvous = try lab.rendezvous()
                    let invite = try lab.invite(rendezvous: rendezvous.url)
                    var spec = NodeSpec(name: "alice", input: nil, join: invite)
                    spec.environment = ["PULSE_SERVER": "unix:\(lab.directory)/no-such-server"]
                    let alice = try lab.node(spec)
                    let bob = try lab.node(NodeSpec(name: "bob", input: "tone:660", join: invite))
                    try alice.waitForPeersUp(1)
                    try bob.waitForPeersUp(1)
                    let warning = alice.process.standardError.split(separator: "\n").filter {
                        $0.contains("no PulseAudio server reachable")
                    }
                    #expect(warning.count == 1)
                    #expect(
                        warning.first?.contains("running without sound (microphone: silence, speaker: null)") == true)
                    let heard = try ListeningWindow([bob]).heard(
                        [bob], seconds: 2, tones: ["alice": 440, "bob": 660], threshold: MeetingTests.threshold)
                    #expect(heard["bob"] == [], "alice sends silence")
                }
            }
        } catch {
            Issue.record("\(error)\n\(lab.logs(of: ["alice", "bob"]))")
        }
        await runBlockingQuietly { lab.shutdown() }
    }
}
