import Foundation
import ParleyCore
import ParleyTestSupport
import Sodium
import Testing

@testable import ParleyProtocol

/// The known-answer vectors of one copy up (docs/PROTOCOL.md §15, `Tests/Fixtures/protocol-v4-fanout.json`,
/// written by the independent Python peer's `tools/write_fanout_vectors.py`): what Parley signs is
/// byte for byte what the Python peer signs, and what either drops, the other drops.
@Suite("Known-answer vectors of signed frames (protocol-v4-fanout.json)")
struct FanOutVectorTests {
    static var file: [String: Any] {
        try! JSONSerialization.jsonObject(with: Data(try! Fixtures.read("protocol-v4-fanout.json"))) as! [String: Any]
    }

    static func bytes(_ value: Any?) -> [UInt8] { hex(value as! String) }
    static func number(_ value: Any?) -> UInt64 { UInt64(value as! String)! }

    @Test func theContextIsTheSpecs() {
        #expect(Self.bytes(Self.file["context"]) == FanOutFrame.context)
    }

    /// Each valid case signed from its seed gives the same frame and FAN_DELIVER, and opens.
    @Test func validFramesAreSignedAlikeAndOpen() throws {
        let cases = (Self.file["cases"] as! [[String: Any]]).filter { $0["valid"] as! Bool }
        #expect(cases.count >= 3)
        for entry in cases {
            let identity = try NodeIdentity(
                identitySeed: SecureBytes(copying: Self.bytes(entry["identity_seed"])),
                staticSecret: SecureBytes(copying: [UInt8](repeating: 1, count: 32)))
            #expect(identity.publicKey == Self.bytes(entry["identity_key"]))
            let room = Self.bytes(entry["room_id"])
            let epoch = Self.number(entry["session_epoch"])
            var signer = FanOutSigner(
                identity: identity, roomID: room, epoch: epoch, counter: Self.number(entry["counter"]))
            let media = Self.bytes(entry["media"])
            var frame: [UInt8] = []
            media.withUnsafeBytes { signer.sign($0, into: &frame) }
            #expect(frame == Self.bytes(entry["signed_frame"]), "\(entry["name"]!)")
            #expect(
                RelayPacket(kind: .fanDeliver, peer: identity.publicKey, payload: frame).encoded()
                    == Self.bytes(entry["fan_deliver"]))
            var verifier = FanOutVerifier(originKey: identity.publicKey, roomID: room, epoch: epoch)
            #expect(verifier.open(frame[...]) == .success(media[...]))
        }
    }

    /// Each invalid case is dropped for the reason it names.
    @Test func invalidFramesAreDroppedForTheirReason() {
        let cases = (Self.file["cases"] as! [[String: Any]]).filter { !($0["valid"] as! Bool) }
        #expect(cases.count >= 8)
        for entry in cases {
            var verifier = FanOutVerifier(
                originKey: Self.bytes(entry["identity_key"]), roomID: Self.bytes(entry["room_id"]),
                epoch: Self.number(entry["session_epoch"]))
            let expected: FanOutFrameError = entry["dropped"] as! String == "length" ? .malformed : .badSignature
            #expect(verifier.open(Self.bytes(entry["signed_frame"])[...]) == .failure(expected), "\(entry["name"]!)")
            if expected == .malformed {
                #expect((try? RelayPacket(parsing: Self.bytes(entry["fan_deliver"]))) == nil)
            }
        }
    }

    /// The replay sequence, fed in order to one window.
    @Test func theReplaySequenceIsAcceptedAsListed() {
        let replay = Self.file["replay"] as! [String: Any]
        var verifier = FanOutVerifier(
            originKey: Self.bytes(replay["identity_key"]), roomID: Self.bytes(replay["room_id"]),
            epoch: Self.number(replay["session_epoch"]))
        for frame in replay["frames"] as! [[String: Any]] {
            let accepted = verifier.open(Self.bytes(frame["signed_frame"])[...])
            switch (frame["accepted"] as! Bool, frame["dropped"] as? String) {
            case (true, _): #expect((try? accepted.get()) != nil, "\(frame["counter"]!)")
            case (false, "replay"): #expect(accepted == .failure(.replayed), "\(frame["counter"]!)")
            case (false, _): #expect(accepted == .failure(.badSignature), "\(frame["counter"]!)")
            }
        }
    }
}
