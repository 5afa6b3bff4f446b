import ControlAPI
import ParleyProtocol

/// The recording notice (docs/PROTOCOL.md §14.2): this node tells every version-3 peer when it
/// starts and stops recording (RECORDING, repeated in each REPORT's flags), and shows what its
/// peers say of themselves. A peer of an older version cannot be told; the user is warned.
extension MeetingCore {
    /// The first protocol version that carries RECORDING (§14).
    static let recordingVersion: UInt8 = 3

    mutating func setRecording(_ value: Bool) {
        guard value != recording else { return }
        recording = value
        for key in peerOrder {
            guard let peer = peers[key], let link = peer.link, link.established,
                peer.version >= Self.recordingVersion
            else { continue }
            output.append(.sendControl(link.id, .recording(value)))
        }
        log(.info, value ? "recording started" : "recording stopped")
        publish(ControlEvent(kind: .recording, state: value ? .recordingStarted : .recordingStopped))
        if value { warnNotTold(peerOrder) }
    }

    /// Names of the members whose links speak a version below 3: they cannot be told that this
    /// node records (§14).
    public var membersNotToldOfRecording: [String] {
        peerOrder.compactMap { key in
            guard let peer = peers[key], peer.link != nil, peer.version < Self.recordingVersion else { return nil }
            return peer.name
        }.sorted()
    }

    /// Warns, while recording, about each of `keys` whose link cannot carry the notice.
    mutating func warnNotTold(_ keys: [[UInt8]]) {
        for key in keys {
            guard let peer = peers[key], peer.link != nil, peer.version < Self.recordingVersion else { continue }
            let message =
                "\(peer.name) (\(peer.shortID)) runs an older Parley (protocol version \(peer.version)) that cannot be "
                + "told that you record; tell them yourself"
            log(.warning, "recording not announced to an older peer", ["peer": peer.shortID])
            publish(ControlEvent(kind: .warning, peer: peer.shortID, name: peer.name, message: message))
        }
    }

    /// The peer's RECORDING, or the recording flag of its REPORT: its state from now on.
    /// Ignored on a link below version 3, where the flag bit means nothing.
    mutating func peerRecording(_ value: Bool, on key: [UInt8]) {
        guard let peer = peers[key], peer.version >= Self.recordingVersion, let link = peer.link,
            link.peerRecording != value
        else { return }
        peers[key]?.link?.peerRecording = value
        log(.info, value ? "peer started recording" : "peer stopped recording", ["peer": peer.shortID])
        publish(
            ControlEvent(
                kind: .recording, peer: peer.shortID, name: peer.name,
                state: value ? .recordingStarted : .recordingStopped))
    }
}
