import Foundation
import SpeexDSP

#if canImport(Glibc)
import Glibc
#endif

/// 16-bit PCM WAV files (RIFF, `WAVE_FORMAT_PCM` or `WAVE_FORMAT_EXTENSIBLE` with PCM data).
public enum WAVFile {
    /// Reads a 16-bit PCM WAV file (mono or stereo, any rate from 8 to 192 kHz) as mono at
    /// `sampleRate`, down-mixing and resampling as needed. Allocates: for opening an input.
    public static func read(path: String, sampleRate: Int = AudioFormat.sampleRate) throws(WAVFileError) -> [Int16] {
        let (samples, rate) = try parse(contents(of: path), path: path)
        do {
            return try Resampler.convert(samples, from: rate, to: sampleRate)
        } catch {
            throw WAVFileError(path, "cannot be resampled: \(error)")
        }
    }

    /// Throws what `read` would, without decoding the samples: for checking an input at start-up,
    /// before the daemon serves its control socket (a WAV input can be minutes long).
    public static func check(path: String) throws(WAVFileError) {
        _ = try layout(of: contents(of: path), path: path)
    }

    /// Parses a WAV file's bytes into mono samples and their rate.
    public static func parse(_ bytes: [UInt8], path: String = "WAV data") throws(WAVFileError) -> ([Int16], Int) {
        let layout = try layout(of: bytes, path: path)
        let stride = 2 * layout.channels
        let frames = layout.data.count / stride
        // Unaligned loads over the bytes, not an index per byte.
        let samples = [Int16](unsafeUninitializedCapacity: frames) { output, count in
            bytes.withUnsafeBytes { raw in
                for index in 0..<frames {
                    let base = layout.data.lowerBound + index * stride
                    let left = Int16(littleEndian: raw.loadUnaligned(fromByteOffset: base, as: Int16.self))
                    guard layout.channels == 2 else {
                        output[index] = left
                        continue
                    }
                    let right = Int16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2, as: Int16.self))
                    output[index] = Int16((Int32(left) + Int32(right)) / 2)
                }
            }
            count = frames
        }
        return (samples, layout.rate)
    }

    private static func contents(of path: String) throws(WAVFileError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else { throw WAVFileError(path, "cannot be read") }
        return [UInt8](data)
    }

    /// A WAV file's format and where its samples are.
    private struct Layout {
        let channels: Int
        let rate: Int
        let data: Range<Int>
    }

    private static func layout(of bytes: [UInt8], path: String) throws(WAVFileError) -> Layout {
        func u16(_ offset: Int) -> Int { Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 }
        func u32(_ offset: Int) -> Int { u16(offset) | u16(offset + 2) << 16 }
        func tag(_ offset: Int) -> String { String(decoding: bytes[offset..<(offset + 4)], as: UTF8.self) }
        guard bytes.count >= 12, tag(0) == "RIFF", tag(8) == "WAVE" else {
            throw WAVFileError(path, "is not a RIFF/WAVE file")
        }
        var offset = 12
        var format: (channels: Int, rate: Int)? = nil
        while offset + 8 <= bytes.count {
            let size = u32(offset + 4)
            let body = offset + 8
            guard body + size <= bytes.count || tag(offset) == "data" else {
                throw WAVFileError(path, "chunk \"\(tag(offset))\" runs past the end of the file")
            }
            switch tag(offset) {
            case "fmt ":
                guard size >= 16 else { throw WAVFileError(path, "has a short fmt chunk") }
                var code = u16(body)
                if code == 0xFFFE, size >= 26 { code = u16(body + 24) }  // WAVE_FORMAT_EXTENSIBLE: sub-format GUID
                let channels = u16(body + 2)
                let rate = u32(body + 4)
                let bits = u16(body + 14)
                guard code == 1, bits == 16 else {
                    throw WAVFileError(path, "is not 16-bit PCM (format \(code), \(bits) bits)")
                }
                guard (1...2).contains(channels), (8000...192_000).contains(rate) else {
                    throw WAVFileError(path, "has \(channels) channels at \(rate) Hz (need 1–2 channels, 8–192 kHz)")
                }
                format = (channels, rate)
            case "data":
                guard let format else { throw WAVFileError(path, "has its data before its fmt chunk") }
                // A streaming writer may leave the size unset (0 or 0xFFFFFFFF): take what is there.
                let end = min(bytes.count, size == 0 ? bytes.count : body + size)
                return Layout(channels: format.channels, rate: format.rate, data: body..<end)
            default:
                break
            }
            offset = body + size + (size & 1)  // chunks are padded to even sizes
        }
        throw WAVFileError(path, "has no data chunk")
    }

    /// Writes mono 16-bit samples as a WAV file (allocating; for tools and tests).
    public static func write(
        _ samples: [Int16], sampleRate: Int = AudioFormat.sampleRate, to path: String
    )
        throws(WAVFileError)
    {
        let writer = try WAVFileWriter(path: path, sampleRate: sampleRate)
        try samples.withUnsafeBufferPointer { buffer in Result { () throws(WAVFileError) in try writer.append(buffer) }
        }
        .get()
        try writer.close()
    }
}

/// Writes a mono 16-bit WAV file incrementally without allocating per call (the playback thread
/// appends a frame at a time); `close` fills in the sizes in the header.
public final class WAVFileWriter {
    public let path: String
    public let sampleRate: Int
    private var descriptor: Int32
    private var dataBytes = 0

    public init(path: String, sampleRate: Int = AudioFormat.sampleRate) throws(WAVFileError) {
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw WAVFileError(path, "cannot be created: \(String(cString: strerror(errno)))")
        }
        self.path = path
        self.sampleRate = sampleRate
        try writeAll(Self.header(sampleRate: sampleRate, dataBytes: 0))
    }

    deinit {
        if descriptor >= 0 { try? close() }
    }

    /// Appends samples (little-endian on disk; Parley's platforms are little-endian).
    public func append(_ samples: UnsafeBufferPointer<Int16>) throws(WAVFileError) {
        #if _endian(big)
        #error("WAVFileWriter writes host-order samples; add byte swapping for big-endian hosts")
        #endif
        try writeAll(UnsafeRawBufferPointer(samples))
        dataBytes += samples.count * 2
    }

    /// Writes the final sizes into the header and closes the file.
    public func close() throws(WAVFileError) {
        guard descriptor >= 0 else { return }
        defer {
            Glibc.close(descriptor)
            descriptor = -1
        }
        guard lseek(descriptor, 0, SEEK_SET) == 0 else { throw WAVFileError(path, "cannot seek to its header") }
        try writeAll(Self.header(sampleRate: sampleRate, dataBytes: dataBytes))
    }

    private func writeAll(_ bytes: [UInt8]) throws(WAVFileError) {
        try bytes.withUnsafeBytes { raw in Result { () throws(WAVFileError) in try writeAll(raw) } }.get()
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws(WAVFileError) {
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else {
                throw WAVFileError(path, "cannot be written: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }

    /// The 44-byte canonical header for mono 16-bit PCM.
    static func header(sampleRate: Int, dataBytes: Int) -> [UInt8] {
        func le32(_ value: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        func le16(_ value: Int) -> [UInt8] { (0..<2).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        return Array("RIFF".utf8) + le32(36 + dataBytes) + Array("WAVE".utf8) + Array("fmt ".utf8) + le32(16)
            + le16(1) + le16(1) + le32(sampleRate) + le32(sampleRate * 2) + le16(2) + le16(16)
            + Array("data".utf8) + le32(dataBytes)
    }
}

/// A WAV file that cannot be read or written, naming the file and the problem.
public struct WAVFileError: Error, Hashable, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String

    init(_ path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "WAV file \(path) \(reason)" }
}
