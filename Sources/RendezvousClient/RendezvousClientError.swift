public import RendezvousWire

/// Why a rendezvous client stopped, or why a call failed.
public enum RendezvousClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The server refused us with an ERROR that retrying will not fix (§4.4), e.g. `room-full`.
    case rejected(RendezvousError)
    /// The server did not accept the `parley.v1` WebSocket subprotocol (§4.1).
    case unsupportedVersion
    /// The server's TLS certificate does not match the invite's pin: possibly an impostor.
    case certificatePinMismatch
    /// `send` while not admitted to the room (between reconnects, or before the first WELCOME).
    case notConnected
    case invalidCertificate(String)
    /// A payload larger than the server accepts (§4.1).
    case payloadTooLarge(Int)

    public var description: String {
        switch self {
        case .rejected(let error): "the rendezvous refused: \(error.reason) (\(error.code.name))"
        case .unsupportedVersion: "rendezvous does not speak Parley protocol v1"
        case .certificatePinMismatch:
            "the rendezvous' TLS certificate does not match the invite's pin (wrong server, or someone in between)"
        case .notConnected: "not connected to the rendezvous"
        case .invalidCertificate(let why): "invalid certificate: \(why)"
        case .payloadTooLarge(let count): "payload of \(count) bytes is larger than a rendezvous message may be"
        }
    }
}
