#if canImport(Glibc)
import Glibc
#endif

/// Every connection is a file descriptor, so the process's open-file limit (RLIMIT_NOFILE)
/// bounds `--max-connections`. Past it, accept() fails and the listener backs off for everyone;
/// better to raise the soft limit as far as the hard limit allows and, if that is still too low,
/// cap the connection limit below it so extra clients are refused one by one.
public enum OpenFileLimit {
    /// Descriptors kept for everything but client connections: listeners, metrics scrapes, the
    /// event loop's own, logs, TLS files.
    public static let reserved = 64

    public struct Plan: Hashable, Sendable {
        /// The soft limit to set (never below the current one).
        public var softLimit: Int
        /// The connection limit to serve with: the one asked for, or what the limit allows.
        public var maxConnections: Int
        /// Whether `maxConnections` had to be lowered (worth a warning).
        public var isCapped: Bool { maxConnections < requested }
        let requested: Int
    }

    /// What to do for `maxConnections` given the current `soft` and `hard` limits.
    public static func plan(maxConnections: Int, soft: Int, hard: Int) -> Plan {
        let wanted = maxConnections + reserved
        let softLimit = max(soft, min(hard, wanted))
        return Plan(
            softLimit: softLimit, maxConnections: min(maxConnections, max(1, softLimit - reserved)),
            requested: maxConnections)
    }

    /// Raises this process's soft limit per `plan(maxConnections:soft:hard:)` and returns the plan.
    public static func apply(maxConnections: Int) -> Plan {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else {
            return Plan(softLimit: 0, maxConnections: maxConnections, requested: maxConnections)
        }
        // RLIM_INFINITY is all ones (Swift cannot import the C macro's -1).
        let clamp = { (value: rlim_t) in value == rlim_t.max ? Int.max / 2 : Int(clamping: value) }
        let soft = clamp(limit.rlim_cur)
        let plan = plan(maxConnections: maxConnections, soft: soft, hard: clamp(limit.rlim_max))
        guard plan.softLimit > soft else { return plan }
        limit.rlim_cur = rlim_t(plan.softLimit)
        return setrlimit(resource, &limit) == 0
            ? plan : Self.plan(maxConnections: maxConnections, soft: soft, hard: soft)
    }
}
