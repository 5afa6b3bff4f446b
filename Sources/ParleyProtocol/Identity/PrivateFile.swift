import ParleyCore
public import Sodium

#if canImport(Glibc)
import Glibc
#endif

/// A problem with a file in the state directory (identity, pins): what and where, in words.
public struct StateFileError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }

    static func system(_ action: String, _ path: String, errno code: Int32 = errno) -> StateFileError {
        StateFileError("cannot \(action) \(path): \(String(cString: strerror(code)))")
    }
}

/// Reading and writing the small secret files of the state directory (docs/PROTOCOL.md §5.2):
/// created 0600 inside a 0700 directory, replaced atomically, and refused when anyone but the
/// owner could read or write them (as ssh refuses a world-readable private key). Also used for the
/// key of `parleyd --host`'s TLS certificate.
public enum PrivateFile {
    static let maximumSize = 1 << 20

    /// Creates `path` and missing parents with mode 0700, and refuses a directory that is not
    /// private to this user (another user who can write there could delete or replace the identity
    /// and pins: `PrivateDirectory.check`).
    public static func ensureDirectory(_ path: String) throws(StateFileError) {
        do {
            try PrivateDirectory.prepare(path, parents: true)
        } catch {
            throw StateFileError("state directory: \(error)")
        }
    }

    /// The contents of `path`, or nil if it does not exist. Throws if it is not a regular file of
    /// ours with no group or other permissions.
    public static func read(_ path: String) throws(StateFileError) -> SecureBytes? {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            throw .system("open", path)
        }
        defer { close(descriptor) }
        var stats = stat()
        guard fstat(descriptor, &stats) == 0 else { throw .system("inspect", path) }
        guard stats.st_mode & S_IFMT == S_IFREG else { throw StateFileError("\(path) is not a regular file") }
        let permissions = stats.st_mode & 0o777
        guard permissions & 0o077 == 0 else {
            throw StateFileError(
                "\(path) is accessible by other users (mode \(String(permissions, radix: 8))); it holds secrets: "
                    + "run chmod 600 \(path)")
        }
        guard stats.st_uid == geteuid() else {
            throw StateFileError("\(path) belongs to user \(stats.st_uid), not to this user (\(geteuid()))")
        }
        guard stats.st_size <= maximumSize else { throw StateFileError("\(path) is too large to be a Parley file") }
        var contents = SecureBytes(zeroedCount: Int(stats.st_size))
        let complete = contents.withUnsafeMutableBytes { buffer in
            transferAll(buffer.count) { Glibc.read(descriptor, buffer.baseAddress! + $0, buffer.count - $0) }
        }
        guard complete else { throw .system("read", path) }
        return contents
    }

    /// Writes `contents` to `path` with mode 0600. With `onlyIfAbsent` it never replaces an
    /// existing file and returns false instead (two daemons creating an identity at once: the
    /// first one wins and the second loads it).
    @discardableResult
    public static func write(
        _ contents: some ReadableBytes, to path: String, onlyIfAbsent: Bool = false
    ) throws(StateFileError)
        -> Bool
    {
        let temporary = "\(path).tmp-\(getpid())-\(RandomBytes.uniform(.max))"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw .system("create", temporary) }
        var closed = false
        defer {
            if !closed { close(descriptor) }
            unlink(temporary)
        }
        // The umask may have removed bits we want, but can never add any; set exactly 0600.
        guard fchmod(descriptor, 0o600) == 0 else { throw .system("set permissions of", temporary) }
        let written = contents.withUnsafeBytes { buffer in
            transferAll(buffer.count) { Glibc.write(descriptor, buffer.baseAddress! + $0, buffer.count - $0) }
        }
        guard written, fsync(descriptor) == 0 else { throw .system("write", temporary) }
        closed = true
        guard close(descriptor) == 0 else { throw .system("write", temporary) }
        if onlyIfAbsent {
            // link(2) fails if the target exists: an atomic create-if-absent of a complete file.
            guard link(temporary, path) == 0 else {
                if errno == EEXIST { return false }
                throw .system("create", path)
            }
        } else {
            guard rename(temporary, path) == 0 else { throw .system("replace", path) }
        }
        return true
    }

    /// Repeats a `read`/`write` call (given the offset reached) until `count` bytes moved,
    /// retrying on EINTR; false on an error or end of file.
    private static func transferAll(_ count: Int, _ call: (Int) -> Int) -> Bool {
        var offset = 0
        while offset < count {
            let moved = call(offset)
            if moved < 0, errno == EINTR { continue }
            guard moved > 0 else { return false }
            offset += moved
        }
        return true
    }
}
