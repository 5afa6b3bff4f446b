#if canImport(Glibc)
import Glibc
#endif

/// What /proc says about the processes under load.
enum ProcessStats {
    /// VmRSS of a process, in kB (0 if it is gone).
    static func residentKB(_ pid: Int32) -> Int {
        lines("/proc/\(pid)/status").first { $0.hasPrefix("VmRSS:") }.flatMap {
            Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        } ?? 0
    }

    /// User + system CPU seconds of a process (/proc/PID/stat fields 14 and 15).
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let line = lines("/proc/\(pid)/stat").first, let close = line.lastIndex(of: ")") else { return 0 }
        let fields = line[line.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, so utime (14) and stime (15) are at 11 and 12.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// `pid` and its children (nginx's master and workers).
    static func withChildren(_ pid: Int32) -> [Int32] {
        let children = lines("/proc/\(pid)/task/\(pid)/children").first ?? ""
        return [pid] + children.split(separator: " ").compactMap { Int32($0) }
    }

    /// The hard open-file limit of this process (its children get the same).
    static func openFileHardLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return limit.rlim_max == rlim_t.max ? 1 << 20 : Int(clamping: limit.rlim_max)
    }

    /// Raises this process's soft open-file limit to its hard limit.
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }

    static func lines(_ path: String) -> [String] {
        guard let file = fopen(path, "r") else { return [] }
        defer { fclose(file) }
        var lines: [String] = []
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            var bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            while bytes.last == 10 { bytes.removeLast() }
            lines.append(String(decoding: bytes, as: UTF8.self))
        }
        return lines
    }
}

/// Monotonic nanoseconds (CLOCK_MONOTONIC), comparable across the loop's callbacks.
enum MonotonicClock {
    static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

func benchSeconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// `value` with `decimals` digits after the point (no Foundation here).
func fixed(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int((abs(value) * scale).rounded())
    let whole = scaled / Int(scale)
    let fraction = String(scaled % Int(scale))
    let sign = value < 0 ? "-" : ""
    guard decimals > 0 else { return sign + String(whole) }
    return sign + String(whole) + "." + String(repeating: "0", count: decimals - fraction.count) + fraction
}

/// 50000 as "50,000".
func grouped(_ value: Int) -> String {
    let digits = Array(String(value))
    var out = ""
    for (index, digit) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
        out.append(digit)
    }
    return out
}
