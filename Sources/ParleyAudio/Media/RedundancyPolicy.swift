import ParleyProtocol

/// How much protection the sender adds for the loss its receivers report (docs/PROTOCOL.md §9).
///
/// Two tools: RFC 2198-style copies of previous frames (full quality, costs a frame's bitrate each)
/// and Opus in-band FEC (a low-bitrate copy of the previous frame carried inside each packet,
/// RFC 6716 §2.1.7, which takes bits from the primary and does nothing below ~24 kb/s). A copy in
/// packet n+1 restores frame n completely, which makes in-band FEC of frame n in the same packet
/// redundant; so FEC is tuned to the loss the copies leave behind.
public struct RedundancyPolicy: Sendable, Hashable {
    /// Protection for one measured loss rate.
    public struct Decision: Sendable, Hashable {
        /// RFC 2198 copies of previous frames in each payload.
        public var copies: Int
        /// The packet-loss percentage to give the Opus encoder (sizes its in-band FEC).
        public var encoderLossPercent: Int
    }

    /// Loss (fraction) at or above which 1, 2, 3 copies are sent.
    public var thresholds: [Double]

    /// Copies start at 1 % measured loss, a second at 5 %, a third at 15 %: with random loss p and
    /// k copies a frame is gone only when k+1 packets in a row are, p^(k+1), which keeps the
    /// residual loss under ~0.3 % up to 15 % loss and under ~0.2 % up to 20 %.
    public init(thresholds: [Double] = [0.01, 0.05, 0.15]) {
        precondition(thresholds.count <= MediaPayload.maximumRedundantCount, "too many thresholds")
        self.thresholds = thresholds
    }

    /// A policy that never sends copies (plain in-band FEC, for comparison).
    public static let fecOnly = RedundancyPolicy(thresholds: [])

    public func decision(forLoss loss: Double) -> Decision {
        let loss = min(max(loss, 0), 1)
        let copies = thresholds.count(where: { loss >= $0 })
        // What the copies cannot restore, rounded up, is what FEC should be sized for.
        var residual = loss
        for _ in 0..<copies { residual *= loss }
        let percent = Int((residual * 100).rounded(.up))
        return Decision(copies: copies, encoderLossPercent: min(100, percent))
    }
}
