#if canImport(Glibc)
import Glibc
#endif

/// A directory that only this user may change: where the control socket lives, and the state
/// directory (identity, pins). Another local user who could create, replace or write into it could
/// swap in their own control socket (and be handed invites) or delete the identity and pins
/// (resetting trust on first use), so a directory that is not exactly ours is refused rather than
/// used, as OpenSSH refuses a `~/.ssh` others can write.
public enum PrivateDirectory {
    /// Why a directory cannot be trusted, in one line that says what to do.
    public struct Refusal: Error, Hashable, Sendable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Creates `path` with mode 0700 if it does not exist (with `parents`, missing parents too,
    /// each 0700), then `check`s it. A directory that appears between the two (someone else's,
    /// created in a race) fails the check like any other.
    public static func prepare(_ path: String, parents: Bool = false) throws(Refusal) {
        let path = withoutTrailingSlashes(path)
        var info = stat()
        if lstat(path, &info) != 0 {
            guard errno == ENOENT else { throw Refusal("cannot inspect \(path): \(errorText())") }
            let parent = parentPath(of: path)
            if parents, parent != "/", parent != ".", lstat(parent, &info) != 0, errno == ENOENT {
                try prepare(parent, parents: true)
            }
            guard mkdir(path, 0o700) == 0 || errno == EEXIST else {
                throw Refusal("cannot create \(path): \(errorText())")
            }
        }
        try check(path)
    }

    /// Refuses, with a reason, a `path` that is not a real directory (a symbolic link is not
    /// followed), does not belong to this user, or that group or others may use (mode other than
    /// 0700 bits); and one inside a directory that someone else could rename it out of: every
    /// directory above it must belong to root or this user and, if others may write to it, be
    /// sticky (as /tmp is), where only a file's owner may rename or remove it.
    public static func check(_ path: String) throws(Refusal) {
        // "link/" would make lstat follow the link.
        let path = withoutTrailingSlashes(path)
        let user = geteuid()
        var info = stat()
        guard lstat(path, &info) == 0 else { throw Refusal("cannot inspect \(path): \(errorText())") }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: break
        case S_IFLNK: throw Refusal("\(path) is a symbolic link, not a directory; refusing to use it (remove it)")
        default: throw Refusal("\(path) exists and is not a directory")
        }
        guard info.st_uid == user else {
            throw Refusal(
                "\(path) belongs to user \(info.st_uid), not to you (user \(user)): another user may be trying to "
                    + "intercept Parley; refusing to use it (remove it, or choose another path)")
        }
        let mode = info.st_mode & 0o7777
        guard mode & 0o077 == 0 else {
            throw Refusal(
                "\(path) is open to other users (mode \(String(mode, radix: 8))); refusing to use it: "
                    + "run chmod 700 \(path)")
        }
        guard let resolved = realpath(path, nil) else { throw Refusal("cannot resolve \(path): \(errorText())") }
        var ancestor = parentPath(of: String(cString: resolved))
        free(resolved)
        while true {
            guard stat(ancestor, &info) == 0 else { throw Refusal("cannot inspect \(ancestor): \(errorText())") }
            guard info.st_uid == 0 || info.st_uid == user else {
                throw Refusal(
                    "\(path) is inside \(ancestor), which belongs to user \(info.st_uid): they could replace it; "
                        + "refusing to use it (choose a path inside a directory of yours)")
            }
            guard info.st_mode & 0o022 == 0 || info.st_mode & S_ISVTX != 0 else {
                throw Refusal(
                    "\(path) is inside \(ancestor), which other users may write to: they could replace it; "
                        + "refusing to use it (choose a path inside a directory of yours)")
            }
            if ancestor == "/" { return }
            ancestor = parentPath(of: ancestor)
        }
    }

    /// `path` without its last component: "/" for "/x", "." for "x".
    public static func parentPath(of path: String) -> String {
        let trimmed = withoutTrailingSlashes(path)
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
    }

    static func withoutTrailingSlashes(_ path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        return String(trimmed)
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }
}
