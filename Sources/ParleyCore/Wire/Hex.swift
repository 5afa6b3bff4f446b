/// Lowercase hex of `bytes`, for identifiers in logs and file names (never for secrets).
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    var text = ""
    for byte in bytes {
        text.append(Character(Unicode.Scalar(hexDigits[Int(byte >> 4)])))
        text.append(Character(Unicode.Scalar(hexDigits[Int(byte & 0x0F)])))
    }
    return text
}

private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
