import ParleyCore

#if canImport(Glibc)
import Glibc
#endif

/// Where `parleyd` listens and `parley` connects unless told otherwise.
public enum ControlSocketPath {
    /// `$XDG_RUNTIME_DIR/parley/parleyd.sock` (a per-user, 0700 directory on systemd systems), or
    /// `/tmp/parley-<uid>/parleyd.sock` when there is no runtime directory.
    public static var defaultPath: String {
        if let runtime = getenv("XDG_RUNTIME_DIR").map({ String(cString: $0) }), !runtime.isEmpty {
            return runtime + "/parley/parleyd.sock"
        }
        return "/tmp/parley-\(getuid())/parleyd.sock"
    }

    /// The longest path that fits `sockaddr_un.sun_path` with its terminator.
    public static let maximumLength = 107
}

extension ControlSocketPath {
    /// Makes `path` ready for a daemon to bind (tailscale's safesocket habit): creates the parent
    /// directory (0700) if missing and refuses one that is not private to this user (another user
    /// who can write there could swap in their own socket, docs/SECURITY.md), replaces a stale
    /// socket left by a daemon that died, and refuses when another daemon is live there or the path
    /// is something other than a socket.
    public static func prepareForListening(_ path: String) throws(ControlError) {
        guard path.utf8.count <= maximumLength else { throw .pathTooLong(path: path) }
        do {
            try PrivateDirectory.prepare(PrivateDirectory.parentPath(of: path))
        } catch {
            throw .system("control socket \(path): \(error)")
        }
        var info = stat()
        guard lstat(path, &info) == 0 else { return }  // nothing there
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw .system("\(path) exists and is not a socket; refusing to replace it")
        }
        let probe: Result<ControlResponse, ControlError> = Result { () throws(ControlError) in
            try ControlClient(path: path, timeoutSeconds: 2).send(ControlRequest(.status))
        }
        switch probe {
        case .failure(.staleSocket):
            guard unlink(path) == 0 else {
                throw .system("cannot remove stale socket \(path): \(String(cString: strerror(errno)))")
            }
        case .success, .failure(.daemon):
            throw .system("another parleyd is already running on \(path)")
        case .failure(let error):
            throw error
        }
    }
}
