internal import COpusEnc

#if canImport(Glibc)
import Glibc
#endif

/// An Ogg Opus file written as it goes (libopusenc): a file a player opens while it grows, or
/// after the writing process was killed. Each Ogg page goes to the file with pwrite(2) as soon as
/// libopusenc completes it, so what the kernel has survives the process; pages are kept short
/// (`maximumPageDelay`) so a kill loses at most that much audio plus what was not encoded yet.
/// Every write also ends the file with an empty end-of-stream page (granule -1), which the next
/// write overwrites: so the file is a complete stream at every moment, and readers that insist on
/// an end of stream (`opusinfo`) accept what a killed process left. Not thread-safe: one thread
/// owns it.
public final class OggOpusWriter {
    public let path: String
    public let sampleRate: Int
    public let channels: Int
    private let encoder: OpaquePointer
    private var descriptor: Int32
    /// Where the pages end (the end-of-stream trailer starts here).
    private var end: off_t = 0
    /// Serial number and sequence number of the last page written.
    private var serial: [UInt8] = [0, 0, 0, 0]
    private var sequence: UInt32 = 0
    /// Samples per channel written so far.
    public private(set) var samplesWritten = 0

    /// Creates `path` (it must not exist; mode 0600: a recording is private) and writes the
    /// stream's headers at once, so even an empty recording is a valid file.
    /// - Parameters:
    ///   - comments: Vorbis comments (`TITLE`, `DATE`, …) for the header.
    ///   - bitrate: Opus bits per second (nil: libopus' choice for the rate and channels).
    ///   - maximumPageDelay: the longest a page waits before it is written, in samples per
    ///     channel at 48 kHz (libopusenc's muxing delay; its default is 1 s).
    public init(
        creating path: String, sampleRate: Int = 48_000, channels: Int = 1, comments: [(String, String)] = [],
        bitrate: Int? = nil, maximumPageDelay: Int = 12_000
    ) throws(OggOpusError) {
        self.path = path
        self.sampleRate = sampleRate
        self.channels = channels
        let opened = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard opened >= 0 else {
            if errno == EEXIST { throw .file("\(path) already exists; a recording never overwrites a file") }
            throw .file("cannot create \(path): \(Self.errorText())")
        }
        descriptor = opened
        guard let tags = ope_comments_create() else {
            Self.discard(opened, path)
            throw .encoder("cannot create the Ogg Opus comments: out of memory")
        }
        defer { ope_comments_destroy(tags) }
        for (tag, value) in comments { _ = ope_comments_add(tags, tag, value) }
        var error: Int32 = OPE_OK
        guard let encoder = ope_encoder_create_pull(tags, Int32(sampleRate), Int32(channels), 0, &error),
            error == OPE_OK
        else {
            Self.discard(opened, path)
            throw .encoder("cannot create the Ogg Opus encoder: \(Self.text(error))")
        }
        self.encoder = encoder
        do {
            // Encode each frame as it comes rather than buffering seconds of input (the default
            // decision delay is 2 s), and close pages after `maximumPageDelay`.
            try check(parley_ope_encoder_set_int(encoder, OPE_SET_DECISION_DELAY_REQUEST, 960), "decision delay")
            try check(
                parley_ope_encoder_set_int(encoder, OPE_SET_MUXING_DELAY_REQUEST, Int32(maximumPageDelay)),
                "muxing delay")
            if let bitrate {
                try check(parley_ope_encoder_set_int(encoder, OPUS_SET_BITRATE_REQUEST, Int32(bitrate)), "bitrate")
            }
            try check(ope_encoder_flush_header(encoder), "header")
            try writePages(flush: true)
        } catch {
            ope_encoder_destroy(encoder)
            Self.discard(opened, path)
            throw error
        }
    }

    deinit {
        ope_encoder_destroy(encoder)
        if descriptor >= 0 { close(descriptor) }
    }

    /// Encodes interleaved 16-bit samples and writes every page that is complete.
    public func write(_ pcm: UnsafeBufferPointer<Int16>) throws(OggOpusError) {
        guard descriptor >= 0 else { throw .file("\(path) is already closed") }
        guard let base = pcm.baseAddress, pcm.count >= channels else { return }
        let frames = pcm.count / channels
        try check(ope_encoder_write(encoder, base, Int32(frames)), "encode")
        samplesWritten += frames
        try writePages(flush: false)
    }

    /// Encodes what is buffered, writes the last pages (end of stream) and closes the file.
    public func finish() throws(OggOpusError) {
        guard descriptor >= 0 else { return }
        defer {
            close(descriptor)
            descriptor = -1
        }
        try check(ope_encoder_drain(encoder), "drain")
        try writePages(flush: true, trailer: false)
        // The real last page carries the end of stream: the trailer goes.
        guard ftruncate(descriptor, end) == 0, fsync(descriptor) == 0 || errno == EINVAL else {
            throw .file("cannot write \(path): \(Self.errorText())")
        }
    }

    /// Writes every page libopusenc has ready (with `flush`, also the one still filling), then
    /// (with `trailer`) the end-of-stream page after them, in one write.
    private func writePages(flush: Bool, trailer: Bool = true) throws(OggOpusError) {
        var bytes: [UInt8] = []
        var page: UnsafeMutablePointer<UInt8>?
        var length: Int32 = 0
        while ope_encoder_get_page(encoder, &page, &length, flush ? 1 : 0) != 0 {
            guard let page, length >= 27 else { continue }
            let pageBytes = UnsafeBufferPointer(start: page, count: Int(length))
            serial = Array(pageBytes[14..<18])
            sequence =
                UInt32(pageBytes[18]) | UInt32(pageBytes[19]) << 8 | UInt32(pageBytes[20]) << 16
                | UInt32(pageBytes[21]) << 24
            bytes += pageBytes
        }
        guard !bytes.isEmpty || !trailer else { return }
        let pages = bytes.count
        if trailer { bytes += Self.endOfStreamPage(serial: serial, sequence: sequence &+ 1) }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes {
                pwrite(descriptor, $0.baseAddress! + offset, $0.count - offset, end + off_t(offset))
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw .file("cannot write \(path): \(Self.errorText())")
            }
            offset += written
        }
        end += off_t(pages)
    }

    /// An Ogg page with no packets that ends the stream (RFC 3533: granule position -1 on a page
    /// where no packet completes).
    static func endOfStreamPage(serial: [UInt8], sequence: UInt32) -> [UInt8] {
        var page: [UInt8] = Array("OggS".utf8) + [0, 0x04] + [UInt8](repeating: 0xff, count: 8) + serial
        page += [
            UInt8(sequence & 0xff), UInt8(sequence >> 8 & 0xff), UInt8(sequence >> 16 & 0xff), UInt8(sequence >> 24),
        ]
        page += [0, 0, 0, 0, 0]
        let crc = oggCRC(page)
        page[22] = UInt8(crc & 0xff)
        page[23] = UInt8(crc >> 8 & 0xff)
        page[24] = UInt8(crc >> 16 & 0xff)
        page[25] = UInt8(crc >> 24)
        return page
    }

    /// Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, no reflection, initial value 0.
    static func oggCRC(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0
        for byte in bytes {
            crc ^= UInt32(byte) << 24
            for _ in 0..<8 { crc = crc & 0x8000_0000 != 0 ? (crc << 1) ^ 0x04C1_1DB7 : crc << 1 }
        }
        return crc
    }

    private func check(_ code: Int32, _ what: String) throws(OggOpusError) {
        guard code == OPE_OK else { throw .encoder("Ogg Opus \(what): \(Self.text(code))") }
    }

    private static func text(_ code: Int32) -> String {
        ope_strerror(code).map { String(cString: $0) } ?? "error \(code)"
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }

    /// A file this writer created but could not start: removed, so a failure leaves nothing.
    private static func discard(_ descriptor: Int32, _ path: String) {
        close(descriptor)
        unlink(path)
    }
}

/// Why an Ogg Opus file could not be written, in one line naming the file or the step.
public enum OggOpusError: Error, Hashable, Sendable, CustomStringConvertible {
    case file(String)
    case encoder(String)

    public var description: String {
        switch self {
        case .file(let text), .encoder(let text): text
        }
    }
}
