import ICE
import ParleyAudio

/// What one link's receive side measured, interval by interval: the loss figure REPORTs carry
/// (§10.1) and what `parley status` shows (loss over the last five intervals, traffic rates).
/// A plain value, sampled when a REPORT closes an interval.
struct LinkMeter: Sendable {
    /// Network loss over the last interval that had media, 0–1000 (§10.1: an interval without
    /// media keeps the previous figure, so the peer's next talk spurt starts with the copies its
    /// link needs).
    private(set) var lossPermille: UInt16 = 0
    /// Statistics at the end of each of the last six intervals (the newest starts the current
    /// one; the oldest starts the five-interval window status shows), and two traffic samples.
    private var history: [ReceiveStatistics] = []
    private var traffic: [(at: ContinuousClock.Instant, counts: ICETrafficCounts)] = []

    mutating func closeInterval(
        statistics: ReceiveStatistics, traffic counts: ICETrafficCounts, at now: ContinuousClock.Instant
    ) {
        let baseline = history.last ?? ReceiveStatistics()
        if statistics.expected > baseline.expected {
            lossPermille = UInt16((statistics.lossFraction(since: baseline) * 1000).rounded())
        }
        history.append(statistics)
        if history.count > 6 { history.removeFirst() }
        traffic.append((now, counts))
        if traffic.count > 2 { traffic.removeFirst() }
    }

    struct Measurements: Sendable {
        var lossPct: Double?
        var rxKbps = 0.0
        var txKbps = 0.0
    }

    func measurements(
        statistics: ReceiveStatistics, traffic counts: ICETrafficCounts, at now: ContinuousClock.Instant
    ) -> Measurements {
        var result = Measurements()
        if let first = traffic.first, first.at < now {
            let seconds = Self.seconds(now - first.at)
            result.rxKbps =
                Double(counts.bytesReceived - min(counts.bytesReceived, first.counts.bytesReceived)) * 8 / 1000
                / seconds
            result.txKbps =
                Double(counts.bytesSent - min(counts.bytesSent, first.counts.bytesSent)) * 8 / 1000 / seconds
        }
        if let oldest = history.first, statistics.expected > oldest.expected {
            result.lossPct = statistics.lossFraction(since: oldest) * 100
        }
        return result
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
