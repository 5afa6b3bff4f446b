internal import COpus

/// What the encoder is tuned for (`OPUS_APPLICATION_*`).
public enum OpusApplication: Sendable {
    /// Speech: favours intelligibility (Parley's default).
    case voip
    /// Music and general audio.
    case audio
    /// Lowest latency: disables the speech-optimised modes.
    case restrictedLowDelay

    var code: Int32 {
        switch self {
        case .voip: OPUS_APPLICATION_VOIP
        case .audio: OPUS_APPLICATION_AUDIO
        case .restrictedLowDelay: OPUS_APPLICATION_RESTRICTED_LOWDELAY
        }
    }
}

/// Encoder frame durations Parley uses (`OPUS_FRAMESIZE_*`, the "expert frame duration").
public enum OpusFrameDuration: Int, CaseIterable, Sendable {
    case ms10 = 10
    case ms20 = 20
    case ms40 = 40
    case ms60 = 60

    /// Samples per channel in one frame at `sampleRate`.
    public func samples(atSampleRate sampleRate: Int) -> Int { sampleRate * rawValue / 1000 }

    var code: Int32 {
        switch self {
        case .ms10: OPUS_FRAMESIZE_10_MS
        case .ms20: OPUS_FRAMESIZE_20_MS
        case .ms40: OPUS_FRAMESIZE_40_MS
        case .ms60: OPUS_FRAMESIZE_60_MS
        }
    }

    init?(code: Int32) {
        guard let match = Self.allCases.first(where: { $0.code == code }) else { return nil }
        self = match
    }
}

/// An integer encoder parameter: the pair of `OPUS_SET_*_REQUEST` / `OPUS_GET_*_REQUEST` codes
/// that libopus' variadic `opus_encoder_ctl` takes, which we call through `COpusShims`.
public struct OpusEncoderParameter: Sendable, CustomStringConvertible {
    let setRequest: Int32
    let getRequest: Int32
    public let description: String

    /// Target bitrate in bits per second (500...512000).
    public static let bitrate = Self(
        setRequest: OPUS_SET_BITRATE_REQUEST, getRequest: OPUS_GET_BITRATE_REQUEST, description: "bitrate")
    /// 0 (fastest) ... 10 (best quality).
    public static let complexity = Self(
        setRequest: OPUS_SET_COMPLEXITY_REQUEST, getRequest: OPUS_GET_COMPLEXITY_REQUEST, description: "complexity")
    /// In-band forward error correction: 1 on, 0 off. Needs `packetLossPercent` > 0 to do anything.
    public static let inbandFEC = Self(
        setRequest: OPUS_SET_INBAND_FEC_REQUEST, getRequest: OPUS_GET_INBAND_FEC_REQUEST, description: "inband-fec")
    /// Discontinuous transmission: 1 on (near-empty packets in silence), 0 off.
    public static let dtx = Self(setRequest: OPUS_SET_DTX_REQUEST, getRequest: OPUS_GET_DTX_REQUEST, description: "dtx")
    /// Expected packet loss, 0...100 %, which sizes the in-band FEC.
    public static let packetLossPercent = Self(
        setRequest: OPUS_SET_PACKET_LOSS_PERC_REQUEST, getRequest: OPUS_GET_PACKET_LOSS_PERC_REQUEST,
        description: "packet-loss-percent")
    /// Variable bitrate: 1 on (default), 0 constant bitrate.
    public static let vbr = Self(setRequest: OPUS_SET_VBR_REQUEST, getRequest: OPUS_GET_VBR_REQUEST, description: "vbr")
    /// `OPUS_SIGNAL_VOICE`, `OPUS_SIGNAL_MUSIC` or `OPUS_AUTO`.
    public static let signal = Self(
        setRequest: OPUS_SET_SIGNAL_REQUEST, getRequest: OPUS_GET_SIGNAL_REQUEST, description: "signal")
}
