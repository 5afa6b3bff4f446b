internal import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A fresh P-256 key and a self-signed X.509 v3 certificate for it (RFC 5280), for a rendezvous
/// whose clients pin its key (docs/PROTOCOL.md §2.2, §4.1): `parleyd --host` serves wss:// with
/// one by default. Nobody validates its names or dates (the pin alone decides), so it is as plain
/// as a certificate can be: `CN=<commonName>`, valid from an hour ago to 9999 (RFC 5280
/// §4.1.2.5's "no well-defined expiration"), no extensions, signed with ECDSA-SHA256.
public enum SelfSignedCertificate {
    public struct PEM: Sendable {
        public let certificate: String
        /// PKCS#8 ("PRIVATE KEY"); a secret: store it mode 0600.
        public let privateKey: String
    }

    public static func make(commonName: String = "parleyd") -> PEM {
        let now = time(nil)
        let key = P256.Signing.PrivateKey()
        let algorithm = DER.sequence(DER.oid([0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]))  // ecdsa-with-SHA256
        let name = DER.sequence(
            DER.set(DER.sequence(DER.oid([0x55, 0x04, 0x03]) + DER.tlv(0x0C, Array(commonName.utf8)))))
        var serial = (0..<16).map { _ in UInt8.random(in: 0...255) }
        serial[0] = serial[0] & 0x3F | 0x40  // positive, and minimal as DER wants
        let tbs = DER.sequence(
            DER.tlv(0xA0, DER.tlv(0x02, [2]))  // version v3
                + DER.tlv(0x02, serial) + algorithm + name
                + DER.sequence(DER.time(now - 3600) + DER.tlv(0x18, Array("99991231235959Z".utf8)))
                + name + Array(key.publicKey.derRepresentation))
        // Signing with a fresh key cannot fail.
        let signature = try! key.signature(for: tbs).derRepresentation
        let certificate = DER.sequence(tbs + algorithm + DER.tlv(0x03, [0] + Array(signature)))
        let base64 = Data(certificate).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return PEM(
            certificate: "-----BEGIN CERTIFICATE-----\n\(base64)\n-----END CERTIFICATE-----\n",
            privateKey: key.pemRepresentation + "\n")
    }
}

/// The few DER encodings a certificate needs (X.690).
enum DER {
    static func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        var length: [UInt8]
        if content.count < 0x80 {
            length = [UInt8(content.count)]
        } else {
            var value = content.count
            length = []
            while value > 0 {
                length.insert(UInt8(value & 0xFF), at: 0)
                value >>= 8
            }
            length.insert(0x80 | UInt8(length.count), at: 0)
        }
        return [tag] + length + content
    }

    static func sequence(_ content: [UInt8]) -> [UInt8] { tlv(0x30, content) }
    static func set(_ content: [UInt8]) -> [UInt8] { tlv(0x31, content) }
    static func oid(_ encoded: [UInt8]) -> [UInt8] { tlv(0x06, encoded) }

    /// UTCTime before 2050, GeneralizedTime from then on (RFC 5280 §4.1.2.5).
    static func time(_ seconds: time_t) -> [UInt8] {
        var value = seconds
        var parts = tm()
        gmtime_r(&value, &parts)
        let year = Int(parts.tm_year) + 1900
        func two(_ number: Int32) -> String { number < 10 ? "0\(number)" : "\(number)" }
        let rest =
            two(parts.tm_mon + 1) + two(parts.tm_mday) + two(parts.tm_hour) + two(parts.tm_min)
            + two(parts.tm_sec) + "Z"
        if year < 2050 { return tlv(0x17, Array((two(Int32(year % 100)) + rest).utf8)) }
        return tlv(0x18, Array(("\(year)" + rest).utf8))
    }
}
