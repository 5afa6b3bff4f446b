public import ParleyAudio

/// How a node runs: who it is, its audio devices and its ICE settings (from parleyd's flags).
public struct NodeConfiguration: Sendable {
    /// Identity and pinned keys live here (created 0700 if missing).
    public var stateDirectory: String
    /// The name other members see (docs/PROTOCOL.md §6.5.1: 1–64 bytes of UTF-8).
    public var displayName: String
    public var audio: AudioEngineConfiguration
    public var ice: ICESettings
    /// `--relay-pairs`: how many pairs of other members this node carries at most when their
    /// direct path fails (docs/PROTOCOL.md §13; 0: never).
    public var relayPairs: Int
    /// Where `parley record start` without a path writes (created 0700 when first used).
    public var recordingsDirectory: String
    /// `--no-fan-out` makes this false: never send one signed copy up through a member
    /// (docs/PROTOCOL.md §15), whose signatures let any member prove what this node said.
    public var fanOut: Bool

    public static let relayPairsRange = 0...64

    public init(
        stateDirectory: String, displayName: String, audio: AudioEngineConfiguration, ice: ICESettings,
        relayPairs: Int = 4, fanOut: Bool = true, recordingsDirectory: String = RecordingFiles.defaultDirectory()
    ) {
        self.recordingsDirectory = recordingsDirectory
        self.fanOut = fanOut
        self.stateDirectory = stateDirectory
        self.displayName = displayName
        self.audio = audio
        self.ice = ice
        self.relayPairs = relayPairs
    }

    /// The pairs this node relays for: none with `--relay-only`, whose own traffic already goes
    /// through TURN (carrying others' would double it there) and whose addresses stay private.
    public var relayedPairs: Int { ice.relayOnly ? 0 : relayPairs }
}
