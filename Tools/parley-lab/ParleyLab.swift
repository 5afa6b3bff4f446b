import ArgumentParser
import NodeLab

/// Helpers for the demo and the node benchmark (not shipped): `hear` says who heard whom from
/// the WAV files nodes wrote, `bench` measures join time, CPU and traffic of real meetings.
@main
struct ParleyLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley-lab",
        abstract: "Check and measure meetings of real parleyd processes.",
        subcommands: [Hear.self, Bench.self])
}

/// `parley-lab hear --tone alice=440 ... --heard alice=alice-heard.wav ...`
struct Hear: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Say who heard whom: find each participant's tone in what every node played.")

    @Option(help: "NAME=HZ: the tone (or quiet pilot tone) NAME's input carries (repeatable).")
    var tone: [String] = []
    @Option(help: "NAME=PATH: the WAV file NAME's node played (repeatable).")
    var heard: [String] = []
    @Option(help: "Skip this many seconds at the start of each file (joining).")
    var from: Double = 0
    @Option(help: "Ignore this many seconds at the end of each file (leaving).")
    var trim: Double = 0
    @Option(help: "Loudness of the tones in dBFS; heard means within 9 dB of it.")
    var level: Double = -10

    func run() throws {
        let tones = try pairs(tone, "--tone").mapValues { text in
            guard let hertz = Double(text), hertz > 0 else { throw ValidationError("bad frequency \(text)") }
            return hertz
        }
        let files = try pairs(heard, "--heard")
        var complete = true
        for name in files.keys.sorted() {
            var samples = try Hearing.allSamples(files[name]!)
            let start = min(samples.count, Int(from * Double(Hearing.sampleRate)))
            let end = max(start, samples.count - Int(trim * Double(Hearing.sampleRate)))
            samples = Array(samples[start..<end])
            let found = Hearing.heard(in: samples, tones: tones, threshold: Hearing.expectedPower(dBFS: level) / 8)
            let others = Set(tones.keys).subtracting([name])
            let missed = others.subtracting(found)
            complete = complete && missed.isEmpty && !found.contains(name)
            let seconds = Double(samples.count) / Double(Hearing.sampleRate)
            var line = "\(name) heard: \(found.subtracting([name]).sorted().joined(separator: ", "))"
            if found.isEmpty { line = "\(name) heard nobody" }
            if !missed.isEmpty { line += " — but NOT \(missed.sorted().joined(separator: ", "))" }
            if found.contains(name) { line += " (and itself: an echo?)" }
            print(line + "  [\(String(format1(seconds))) s analysed]")
        }
        print(complete ? "everyone heard everyone else" : "some participants did not hear each other")
        if !complete { throw ExitCode(1) }
    }

    private func pairs(_ values: [String], _ flag: String) throws -> [String: String] {
        var result: [String: String] = [:]
        for value in values {
            guard let equals = value.firstIndex(of: "="), equals != value.startIndex else {
                throw ValidationError("\(flag) wants NAME=VALUE, got \(value)")
            }
            result[String(value[..<equals])] = String(value[value.index(after: equals)...])
        }
        return result
    }
}

func format1(_ value: Double) -> String {
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10))"
}
