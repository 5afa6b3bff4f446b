import ParleyAudio
import Testing

@testable import ParleyNode

@Suite("Node configuration")
struct NodeConfigurationTests {
    /// A `--relay-only` node never carries other members' audio (issue 14): its own traffic
    /// already goes through TURN, and its addresses stay private.
    @Test(arguments: [(false, 4, 4), (false, 0, 0), (true, 4, 0), (true, 10, 0)])
    func relayOnlyNodesRelayForNobody(relayOnly: Bool, flag: Int, relayed: Int) {
        var ice = ICESettings()
        ice.relayOnly = relayOnly
        let configuration = NodeConfiguration(
            stateDirectory: "/nonexistent", displayName: "me",
            audio: AudioEngineConfiguration(input: .silence, output: .null), ice: ice, relayPairs: flag)
        #expect(configuration.relayedPairs == relayed)
    }
}
