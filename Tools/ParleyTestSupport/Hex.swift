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
