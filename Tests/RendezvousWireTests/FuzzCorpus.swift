#if canImport(Glibc)
import Glibc
#endif

/// The seed corpora in `Fuzz/corpus/<name>/` (one message per file), shared by this mutation test
/// and the libFuzzer targets.
enum FuzzCorpus {
    struct Missing: Error, CustomStringConvertible {
        let description: String
    }

    static func directory(_ name: String) -> String {
        // Tests/RendezvousWireTests/FuzzCorpus.swift → package root.
        var path = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        path.removeLast(3)
        return path.joined(separator: "/") + "/Fuzz/corpus/\(name)"
    }

    static func seeds(_ name: String) throws -> [[UInt8]] {
        let directory = directory(name)
        guard let dir = opendir(directory) else { throw Missing(description: "no corpus at \(directory)") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if !name.hasPrefix(".") { names.append(name) }
        }
        return try names.sorted().map { try read("\(directory)/\($0)") }
    }

    private static func read(_ path: String) throws -> [UInt8] {
        guard let file = fopen(path, "rb") else { throw Missing(description: "cannot open \(path)") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            bytes += chunk[0..<count]
            if count < chunk.count { return bytes }
        }
    }
}
