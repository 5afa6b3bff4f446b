/// CRC-32 as ISO/IEC 13239 and ITU-T V.42 define it (the zlib/Ethernet CRC: reflected polynomial
/// 0xEDB88320, initial value and final XOR 0xFFFFFFFF), which STUN's FINGERPRINT uses
/// (RFC 8489 §14.7).
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        return crc
    }

    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = (crc >> 8) ^ table[Int((crc ^ UInt32(byte)) & 0xFF)] }
        return crc ^ 0xFFFF_FFFF
    }
}
