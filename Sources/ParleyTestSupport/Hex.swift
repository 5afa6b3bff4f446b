/// The bytes of a hex string (known-answer tests). Traps on malformed hex: test data is fixed.
public func hex(_ string: String) -> [UInt8] {
    precondition(string.count % 2 == 0, "odd-length hex")
    var bytes: [UInt8] = []
    var index = string.startIndex
    while index < string.endIndex {
        let next = string.index(index, offsetBy: 2)
        bytes.append(UInt8(string[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

/// Lowercase hex of `bytes` (fixture generators, failure messages).
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}
