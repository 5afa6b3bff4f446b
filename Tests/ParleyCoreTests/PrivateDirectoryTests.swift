import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `PrivateDirectory`: the control socket's directory and the state directory are used only when
/// no other user can change them (issue 15, finding 1).
@Suite("Private directories")
struct PrivateDirectoryTests {
    /// A fresh 0700 directory in /tmp, removed (with what the test put in it) at the end.
    final class Scratch {
        let path: String
        init() {
            var template = Array("/tmp/parley-private-XXXXXX".utf8CString)
            path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        func mode(of path: String) -> mode_t {
            var info = stat()
            return lstat(path, &info) == 0 ? info.st_mode & 0o7777 : 0
        }
    }

    @Test func createsMissingDirectoriesOwnerOnly() throws {
        let scratch = Scratch()
        let nested = scratch.path + "/a/b/state"
        try PrivateDirectory.prepare(nested, parents: true)
        #expect(scratch.mode(of: scratch.path + "/a") == 0o700)
        #expect(scratch.mode(of: nested) == 0o700)
        try PrivateDirectory.prepare(nested + "/", parents: true)  // existing, with a trailing slash
    }

    @Test(arguments: [0o777, 0o755, 0o750, 0o701, 0o1777])
    func refusesADirectoryOthersMayUse(mode: Int) throws {
        let scratch = Scratch()
        let directory = scratch.path + "/sockets"
        #expect(mkdir(directory, 0o700) == 0)
        #expect(chmod(directory, mode_t(mode)) == 0)
        let refusal = #expect(throws: PrivateDirectory.Refusal.self) { try PrivateDirectory.prepare(directory) }
        #expect(
            refusal?.description == "\(directory) is open to other users (mode \(String(mode, radix: 8))); "
                + "refusing to use it: run chmod 700 \(directory)")
    }

    @Test func refusesASymbolicLinkEvenToAPrivateDirectory() throws {
        let scratch = Scratch()
        #expect(mkdir(scratch.path + "/real", 0o700) == 0)
        #expect(symlink(scratch.path + "/real", scratch.path + "/link") == 0)
        for path in [scratch.path + "/link", scratch.path + "/link/"] {
            let refusal = #expect(throws: PrivateDirectory.Refusal.self) { try PrivateDirectory.check(path) }
            #expect(refusal?.description.contains("is a symbolic link") == true)
        }
    }

    @Test func refusesADirectoryInsideOneOthersCanWriteWithoutTheStickyBit() throws {
        let scratch = Scratch()
        let shared = scratch.path + "/shared"
        #expect(mkdir(shared, 0o700) == 0 && chmod(shared, 0o777) == 0)
        let refusal = #expect(throws: PrivateDirectory.Refusal.self) {
            try PrivateDirectory.prepare(shared + "/parley")
        }
        #expect(refusal?.description.contains("which other users may write to") == true)
        // Sticky, as /tmp: only the owner of an entry may rename or remove it.
        #expect(chmod(shared, 0o1777) == 0)
        try PrivateDirectory.prepare(shared + "/parley")
    }

    /// Needs root to give a directory away: another user's directory is refused however private
    /// its mode, and so is one inside a directory of theirs.
    @Test(.enabled(if: TestEnvironment.shouldRun(needing: TestEnvironment.isRoot)))
    func refusesAnotherUsersDirectory() throws {
        let scratch = Scratch()
        #expect(chmod(scratch.path, 0o755) == 0)
        let theirs = scratch.path + "/theirs"
        #expect(mkdir(theirs, 0o700) == 0 && chown(theirs, 65534, 65534) == 0)
        let refusal = #expect(throws: PrivateDirectory.Refusal.self) { try PrivateDirectory.prepare(theirs) }
        #expect(refusal?.description.contains("belongs to user 65534, not to you (user 0)") == true)

        #expect(chmod(theirs, 0o755) == 0)
        let inside = theirs + "/mine"
        #expect(mkdir(inside, 0o700) == 0)
        let parentRefusal = #expect(throws: PrivateDirectory.Refusal.self) { try PrivateDirectory.check(inside) }
        #expect(parentRefusal?.description.contains("inside \(theirs), which belongs to user 65534") == true)
    }
}
