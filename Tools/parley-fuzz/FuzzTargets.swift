import MeetingCore
import ParleyCore
import ParleyProtocol
import RendezvousWire

/// Every fuzz target, by the name `Scripts/fuzz` uses. To add one, write an entry point
/// `([UInt8]) -> Void` in the library that owns the parser (and optionally its seed inputs), add
/// that library to this target's dependencies in Package.swift, and add one line here.
let fuzzTargets: [String: FuzzTarget] = [
    "invite": FuzzTarget(run: ParleyProtocolFuzz.invite, seeds: ParleyProtocolFuzz.inviteSeeds),
    "envelope": FuzzTarget(run: ParleyProtocolFuzz.envelope, seeds: ParleyProtocolFuzz.envelopeSeeds),
    "transport": FuzzTarget(run: ParleyProtocolFuzz.transportPacket, seeds: ParleyProtocolFuzz.transportSeeds),
    "security-code": FuzzTarget(run: ParleyProtocolFuzz.securityCode, seeds: ParleyProtocolFuzz.securityCodeSeeds),
    "rendezvous-frame": FuzzTarget(run: { bytes in bytes.withUnsafeBytes(RendezvousWire.fuzz) }),
    "stun": FuzzTarget(run: { bytes in bytes.withUnsafeBytes(RendezvousWire.fuzzSTUN) }),
    "client-address": FuzzTarget(run: RendezvousWire.fuzzClientAddress, seeds: RendezvousWire.clientAddressSeeds),
    "session-control": FuzzTarget(run: MeetingCoreFuzz.sessionControl, seeds: MeetingCoreFuzz.sessionControlSeeds),
    "media": FuzzTarget(run: { bytes in bytes.withUnsafeBytes(MediaPayload.fuzzOneInput) }),
    "fan-out": FuzzTarget(run: ParleyProtocolFuzz.fanOutFrame, seeds: ParleyProtocolFuzz.fanOutSeeds),
]

struct FuzzTarget: Sendable {
    /// Must return for every input; crashes (traps, failed preconditions) are findings.
    let run: @Sendable ([UInt8]) -> Void
    /// Valid inputs to start the corpus from, so the fuzzer reaches the deep paths quickly.
    var seeds: @Sendable () -> [[UInt8]] = { [] }
}
