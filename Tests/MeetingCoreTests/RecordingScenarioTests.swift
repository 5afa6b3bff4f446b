import ControlAPI
import MeetingCore
import MeetingSimulation
import Testing

/// The recording notice (PROTOCOL §14.2) in whole simulated meetings.
@Suite("Recording notice (simulated)", .serialized)
struct RecordingScenarioTests {
    static func recording(_ sim: MeetingSimulation, at node: MeetingSimulation.NodeID, of name: String) -> Bool {
        sim.links(of: node)[name]?.recording == true
    }

    /// Everyone learns at once when a member starts and stops recording, even one whose packets
    /// from the recorder are half lost (the REPORT flag repeats what a lost RECORDING said), and
    /// a member who joins later learns it from its first REPORT.
    @Test func everyoneSeesWhoRecords() {
        let (sim, ids) = MeetingScenarioTests.meeting(3)
        #expect(sim.run(until: .seconds(3)) { sim.allLinksUp() })
        let (alice, bob, carol) = (ids[0], ids[1], ids[2])
        sim.setLoss(from: alice, to: carol, 0.5)
        sim.setRecording(alice, true)
        let started = sim.elapsed
        #expect(sim.run(until: .milliseconds(100)) { Self.recording(sim, at: bob, of: "alice") })
        #expect(sim.run(until: .seconds(5)) { Self.recording(sim, at: carol, of: "alice") })
        #expect(sim.elapsed - started < .seconds(5))
        #expect(
            sim.events(of: bob).contains {
                $0.kind == .recording && $0.name == "alice" && $0.state == .recordingStarted
            })
        #expect(sim.verification(of: bob).recording.map(\.name) == ["alice"])
        #expect(sim.verification(of: alice).recording.map(\.name) == ["alice"])
        #expect(!Self.recording(sim, at: alice, of: "bob"))

        let dave = sim.addNode("dave")
        sim.join(dave)
        #expect(sim.run(until: .seconds(3)) { Self.recording(sim, at: dave, of: "alice") })

        sim.setLoss(from: alice, to: carol, 0)
        sim.setRecording(alice, false)
        #expect(
            sim.run(until: .milliseconds(100)) {
                [bob, carol, dave].allSatisfy { !Self.recording(sim, at: $0, of: "alice") }
            })
        #expect(
            sim.events(of: carol).contains {
                $0.kind == .recording && $0.name == "alice" && $0.state == .recordingStopped
            })
    }
}
