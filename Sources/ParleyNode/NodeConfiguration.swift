public import ParleyAudio

/// How a node runs: who it is, its audio devices and its ICE settings (from parleyd's flags).
public struct NodeConfiguration: Sendable {
    /// Identity and pinned keys live here (created 0700 if missing).
    public var stateDirectory: String
    /// The name other members see (docs/PROTOCOL.md §6.5.1: 1–64 bytes of UTF-8).
    public var displayName: String
    public var audio: AudioEngineConfiguration
    public var ice: ICESettings

    public init(stateDirectory: String, displayName: String, audio: AudioEngineConfiguration, ice: ICESettings) {
        self.stateDirectory = stateDirectory
        self.displayName = displayName
        self.audio = audio
        self.ice = ice
    }
}
