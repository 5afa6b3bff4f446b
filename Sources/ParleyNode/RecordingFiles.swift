import ParleyCore

#if canImport(Glibc)
import Glibc
#endif

/// Where recordings go when `parley record start` names no file.
public enum RecordingFiles {
    /// `$XDG_DATA_HOME/parley/recordings`, else `~/.local/share/parley/recordings`.
    public static func defaultDirectory() -> String {
        if let data = getenv("XDG_DATA_HOME").map({ String(cString: $0) }), !data.isEmpty {
            return data + "/parley/recordings"
        }
        let home = getenv("HOME").map { String(cString: $0) } ?? "/tmp"
        return home + "/.local/share/parley/recordings"
    }

    /// A new file in `directory` (created 0700 with its parents if missing; it must be this
    /// user's and private): `parley-YYYYMMDD-HHMMSS.opus` in UTC, with `-2`, `-3` … if taken.
    static func newPath(in directory: String) throws(RecordingPathError) -> String {
        do {
            try PrivateDirectory.prepare(directory, parents: true)
        } catch {
            throw RecordingPathError(description: "recordings directory: \(error)")
        }
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let stamp =
            "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))-"
            + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))"
        var candidate = "\(directory)/parley-\(stamp).opus"
        var number = 2
        var info = stat()
        while lstat(candidate, &info) == 0 {
            candidate = "\(directory)/parley-\(stamp)-\(number).opus"
            number += 1
        }
        return candidate
    }
}

struct RecordingPathError: Error, CustomStringConvertible {
    let description: String
}
