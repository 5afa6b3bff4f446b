import OggOpus
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Ogg Opus files written as they go (libopusenc), checked with opus-tools' `opusinfo`.
@Suite("Ogg Opus writer")
struct OggOpusWriterTests {
    static let opusinfo = "/usr/bin/opusinfo"

    static func temporaryPath(_ name: String) -> String {
        var template = Array("/tmp/parley-ogg-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        return "\(directory)/\(name)"
    }

    static func tone(seconds: Double) -> [Int16] {
        (0..<Int(seconds * 48_000)).map { Int16(8000 * sin(2 * Double.pi * 440 * Double($0) / 48_000)) }
    }

    static func size(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : -1
    }

    static func opusinfoAccepts(_ path: String) -> Bool {
        var pid = pid_t()
        let words: [String] = [opusinfo, "-q", path]
        let arguments: [UnsafeMutablePointer<CChar>?] = words.map { word in word.withCString { strdup($0) } } + [nil]
        defer { for argument in arguments { free(argument) } }
        guard posix_spawn(&pid, opusinfo, nil, nil, arguments, nil) == 0 else { return false }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return status == 0
    }

    /// The file exists with its headers at once (0600), grows a page at a time while written,
    /// and is a valid Ogg Opus file when finished.
    @Test(.enabled(if: TestEnvironment.shouldRun(needing: access(opusinfo, X_OK) == 0)))
    func writesAValidFileAsItGoes() throws {
        let path = Self.temporaryPath("tone.opus")
        let writer = try OggOpusWriter(creating: path, comments: [("TITLE", "test")], bitrate: 32_000)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let headers = Self.size(path)
        #expect(headers > 0)
        let tone = Self.tone(seconds: 2)
        for start in stride(from: 0, to: tone.count, by: 960) {
            try tone[start..<start + 960].withUnsafeBufferPointer { try writer.write($0) }
        }
        // Two seconds in, pages of at most a quarter second: most of it is on disk already.
        #expect(Self.size(path) > headers + 32_000 / 8)
        #expect(Self.opusinfoAccepts(path), "a file cut off mid-write (as by kill -9) is still valid")
        try writer.finish()
        #expect(writer.samplesWritten == 96_000)
        #expect(Self.opusinfoAccepts(path))
    }

    /// A file that exists is never overwritten, and the error names it.
    @Test func refusesToOverwrite() throws {
        let path = Self.temporaryPath("taken.opus")
        let descriptor = open(path, O_WRONLY | O_CREAT, 0o644)
        #expect(write(descriptor, "keep", 4) == 4)
        close(descriptor)
        #expect(throws: OggOpusError.file("\(path) already exists; a recording never overwrites a file")) {
            try OggOpusWriter(creating: path)
        }
        #expect(Self.size(path) == 4)
        #expect(throws: OggOpusError.self) { try OggOpusWriter(creating: "/nonexistent-directory/x.opus") }
    }
}
