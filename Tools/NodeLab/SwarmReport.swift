/// Reading `rendezvous-bench swarm`'s JSON lines (`{"t":…,"connected":…,"formed":…,"rooms":…}`):
/// members admitted now, and rooms in which every member sees exactly the others.
public enum SwarmReport {
    public struct Line: Sendable {
        public let connected: Int
        public let formed: Int
    }

    public static func lines(_ swarm: ChildProcess) -> [Line] {
        swarm.standardOutput.split(separator: "\n").compactMap { line in
            guard let connected = field("connected", line), let formed = field("formed", line) else { return nil }
            return Line(connected: connected, formed: formed)
        }
    }

    static func field(_ name: String, _ line: Substring) -> Int? {
        guard let start = line.firstRange(of: "\"\(name)\":") else { return nil }
        return Int(line[start.upperBound...].prefix { $0.isNumber })
    }

    public static func waitUntilFormed(_ swarm: ChildProcess, rooms: Int, members: Int, limit: Duration) throws {
        try LabWait.until(limit, "\(rooms) rooms of \(members) to form") {
            if let status = swarm.exitStatus {
                throw LabError("the swarm stopped (\(status)): \(swarm.standardOutput.lastLine)")
            }
            guard let last = lines(swarm).last else { return false }
            return last.formed == rooms && last.connected == rooms * members
        }
    }

    /// Whether, since line `mark`, members were seen disconnected and now every room is formed.
    public static func formedAfterADip(_ swarm: ChildProcess, since mark: Int, rooms: Int, members: Int) -> Bool {
        let recent = lines(swarm).dropFirst(mark)
        guard recent.contains(where: { $0.connected < rooms * members }), let last = recent.last else { return false }
        return last.formed == rooms && last.connected == rooms * members
    }
}
