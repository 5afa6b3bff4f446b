/// Listening to a meeting in progress: where each node's output stands now, and what it played
/// in the seconds after.
public struct ListeningWindow: Sendable {
    public let starts: [String: Int]

    /// Marks the current end of each node's WAV output.
    public init(_ nodes: [NodeHandle]) {
        starts = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, $0.samplesHeard) })
    }

    /// Waits until each node played `skipping + seconds` more audio (bounded), then returns what
    /// each heard in the last `seconds` of it, by tone name. `skipping` lets audio already on its
    /// way (jitter buffers, packets in flight) play out after a change.
    public func heard(
        _ nodes: [NodeHandle], seconds: Double, skipping: Double = 0, tones: [String: Double], threshold: Double
    ) throws -> [String: Set<String>] {
        try played(nodes, seconds: seconds, skipping: skipping).mapValues {
            Hearing.heard(in: $0, tones: tones, threshold: threshold)
        }
    }

    /// Like `heard`, but for each node and tone the share (0...1) of the window's 100 ms blocks
    /// that carry the tone: a tone in bursts, or audio with a gap a loaded machine caused, is
    /// still told apart from a tone that is not there at all.
    public func shares(
        _ nodes: [NodeHandle], seconds: Double, skipping: Double = 0, tones: [String: Double], threshold: Double
    ) throws -> [String: [String: Double]] {
        try played(nodes, seconds: seconds, skipping: skipping).mapValues { samples in
            tones.mapValues { Hearing.share(of: $0, in: samples, threshold: threshold) }
        }
    }

    /// Waits for the audio `heard` and `shares` look at and returns it, by node.
    private func played(_ nodes: [NodeHandle], seconds: Double, skipping: Double) throws -> [String: [Int16]] {
        let skip = Int(skipping * Double(Hearing.sampleRate))
        let count = Int(seconds * Double(Hearing.sampleRate))
        try LabWait.until(.seconds((skipping + seconds) * 4 + 10), "\(seconds) s of audio from every node") {
            nodes.allSatisfy { $0.samplesHeard >= (starts[$0.name] ?? 0) + skip + count }
        }
        var result: [String: [Int16]] = [:]
        for node in nodes {
            result[node.name] = try Hearing.samples(node.wav, from: (starts[node.name] ?? 0) + skip, count: count)
        }
        return result
    }

    /// "alice heard bob, carol; bob heard alice" for messages.
    public static func describe(_ heard: [String: Set<String>]) -> String {
        heard.keys.sorted().map { "\($0) heard \(heard[$0]!.sorted().joined(separator: ", "))" }.joined(
            separator: "; ")
    }
}
