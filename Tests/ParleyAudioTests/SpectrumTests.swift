import ParleyCore
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Spectrum")
struct SpectrumTests {
    static func tone(_ frequency: Double, seconds: Double = 0.5, amplitude: Double = 0.5) -> [Int16] {
        let count = Int(48_000 * seconds)
        return (0..<count).map { Int16(amplitude * 32767 * sin(2 * Double.pi * frequency * Double($0) / 48_000)) }
    }

    @Test(arguments: [300.0, 440.0, 1000.0, 2500.0])
    func findsTheDominantFrequency(frequency: Double) throws {
        let found = try #require(Spectrum.dominantFrequency(in: Self.tone(frequency), sampleRate: 48_000))
        #expect(abs(found - frequency) <= 48_000 / 16_384 + 0.01)
    }

    @Test func silenceHasNoDominantFrequency() {
        #expect(Spectrum.dominantFrequency(in: [Int16](repeating: 0, count: 4096), sampleRate: 48_000) == nil)
        #expect(Spectrum.dominantFrequency(in: [1, 2, 3], sampleRate: 48_000) == nil)
    }

    @Test func goertzelSeparatesMixedTones() {
        let a = Self.tone(500, amplitude: 0.3)
        let b = Self.tone(900, amplitude: 0.3)
        let mix = zip(a, b).map { $0 &+ $1 }
        let at500 = Spectrum.power(of: 500, in: mix, sampleRate: 48_000)
        let at900 = Spectrum.power(of: 900, in: mix, sampleRate: 48_000)
        let at700 = Spectrum.power(of: 700, in: mix, sampleRate: 48_000)
        #expect(at500 > 100 * at700)
        #expect(at900 > 100 * at700)
        #expect(abs(at500 - 0.0225) < 0.005)  // (0.3 / 2)^2
    }
}
