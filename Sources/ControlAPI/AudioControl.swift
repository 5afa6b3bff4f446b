/// `parley devices`: what the sound server offers, and what the daemon uses.
public struct DeviceList: Codable, Sendable, Equatable {
    public var sources: [AudioDeviceInfo]
    public var sinks: [AudioDeviceInfo]
    /// What the daemon was told to use (`parley input` / `--audio-in`), e.g. `pulse:NAME`, `pulse`
    /// for the server's default, `tone:440`.
    public var chosenInput: String
    public var chosenOutput: String
    /// Set while the chosen device is missing and the default stands in for it.
    public var inputFallback: Bool
    public var outputFallback: Bool

    public init(
        sources: [AudioDeviceInfo], sinks: [AudioDeviceInfo], chosenInput: String, chosenOutput: String,
        inputFallback: Bool = false, outputFallback: Bool = false
    ) {
        self.sources = sources
        self.sinks = sinks
        self.chosenInput = chosenInput
        self.chosenOutput = chosenOutput
        self.inputFallback = inputFallback
        self.outputFallback = outputFallback
    }

    enum CodingKeys: String, CodingKey {
        case sources, sinks
        case chosenInput = "chosen_input"
        case chosenOutput = "chosen_output"
        case inputFallback = "input_fallback"
        case outputFallback = "output_fallback"
    }
}

/// One source or sink of the sound server.
public struct AudioDeviceInfo: Codable, Sendable, Equatable {
    public var name: String
    public var description: String
    /// The server's default for its direction.
    public var isDefault: Bool
    /// Whether the daemon's stream plays to / records from it now.
    public var inUse: Bool

    public init(name: String, description: String, isDefault: Bool, inUse: Bool) {
        self.name = name
        self.description = description
        self.isDefault = isDefault
        self.inUse = inUse
    }

    enum CodingKeys: String, CodingKey {
        case name, description
        case isDefault = "default"
        case inUse = "in_use"
    }
}

/// One peer's volume at this node (`parley volume`).
public struct PeerVolume: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var percent: Int

    public init(id: String, name: String, percent: Int) {
        self.id = id
        self.name = name
        self.percent = percent
    }

    /// The volumes a person may choose: 0 (muted for this node only) to 200 %.
    public static let range = 0...200

    /// `50`, `50%` or `50 %` → 50; nil for anything else or outside `range` (say `rule`).
    public static func percent(parsing text: String) -> Int? {
        var digits = Substring(text)
        if digits.hasSuffix("%") { digits = digits.dropLast() }
        while digits.last == " " { digits = digits.dropLast() }
        guard let value = Int(digits), range.contains(value) else { return nil }
        return value
    }

    public static let rule = "a volume is a whole percentage from 0 to 200 (0 mutes the peer for you only)"
}

/// What `parley test-audio` measured: a tone played to the speaker, the microphone's level.
public struct AudioTestResult: Codable, Sendable, Equatable {
    public var input: String
    public var output: String
    /// The tone's frequency and length.
    public var toneHz: Int
    public var seconds: Double
    /// The microphone's RMS level over the test, in dBFS (average and loudest 20 ms frame).
    public var inputLevelDbfs: Double
    public var inputPeakDbfs: Double

    public init(
        input: String, output: String, toneHz: Int, seconds: Double, inputLevelDbfs: Double, inputPeakDbfs: Double
    ) {
        self.input = input
        self.output = output
        self.toneHz = toneHz
        self.seconds = seconds
        self.inputLevelDbfs = inputLevelDbfs
        self.inputPeakDbfs = inputPeakDbfs
    }

    enum CodingKeys: String, CodingKey {
        case input, output
        case toneHz = "tone_hz"
        case seconds
        case inputLevelDbfs = "input_level_dbfs"
        case inputPeakDbfs = "input_peak_dbfs"
    }
}
