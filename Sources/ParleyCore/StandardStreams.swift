#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writing to the process's standard streams without touching C's global `FILE*` variables,
/// which Swift 6 treats as shared mutable state.
public enum StandardStreams {
    /// Writes `text` and a newline to standard error, unbuffered.
    public static func printError(_ text: String) {
        var bytes = Array((text + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
            if written <= 0 { return }
            offset += written
        }
        bytes.removeAll()
    }

    /// Flushes everything `print` has buffered (so piped output appears line by line).
    public static func flushOutput() {
        fflush(nil)
    }
}
