/// Anything whose bytes can be read in place: the input type of this module's functions, so
/// callers pass arrays, slices, secrets or raw buffers without copying (Foundation's
/// `ReadableBytes`, without depending on Foundation).
public protocol ReadableBytes {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ReadableBytes where Element == UInt8 {}
extension ArraySlice: ReadableBytes where Element == UInt8 {}
extension ContiguousArray: ReadableBytes where Element == UInt8 {}

extension UnsafeRawBufferPointer: ReadableBytes {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(self)
    }
}
