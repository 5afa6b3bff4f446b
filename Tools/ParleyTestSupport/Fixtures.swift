#if canImport(Glibc)
import Glibc
#endif

/// Test fixtures (known-answer vectors and the like) in the repository's `Tests/Fixtures/`,
/// found relative to this source file so tests read them from a clean clone without SwiftPM
/// resources or Foundation bundles.
public enum Fixtures {
    /// The absolute path of `Tests/Fixtures/<name>`.
    public static func path(_ name: String) -> String {
        // This file is <repo>/Tools/ParleyTestSupport/Fixtures.swift.
        var components = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        components.removeLast(3)
        return components.joined(separator: "/") + "/Tests/Fixtures/" + name
    }

    /// The bytes of `Tests/Fixtures/<name>`.
    public static func read(_ name: String) throws -> [UInt8] {
        let path = path(name)
        guard let file = fopen(path, "rb") else { throw FixtureError("cannot open fixture \(path)") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            bytes += chunk[0..<count]
            if count < chunk.count { break }
        }
        return bytes
    }

    /// Writes `Tests/Fixtures/<name>` (used by fixture generators, never by ordinary test runs).
    public static func write(_ name: String, _ bytes: [UInt8]) throws {
        let path = path(name)
        guard let file = fopen(path, "wb") else { throw FixtureError("cannot create fixture \(path)") }
        defer { fclose(file) }
        guard fwrite(bytes, 1, bytes.count, file) == bytes.count else { throw FixtureError("cannot write \(path)") }
    }
}

/// A fixture file that could not be read or written.
public struct FixtureError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
