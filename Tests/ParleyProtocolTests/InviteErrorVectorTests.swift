import Foundation
import ParleyTestSupport
import Testing

@testable import ParleyProtocol

/// `Tests/Fixtures/protocol-v1-invite-errors.json`: invites whose fields break docs/PROTOCOL.md §2.2 in
/// one way each, written by the independent Python implementation
/// (`Interop/python-peer/tools/write_invite_error_vectors.py`). Both implementations must report the
/// same error code, in the order §2.2 gives, or accept the invite where the file says `null`.
@Suite("Invite field errors agree with the independent implementation")
struct InviteErrorVectorTests {
    struct Case: Decodable, CustomTestStringConvertible {
        let name: String
        let invite: String
        let error: String?
        var testDescription: String { name }
    }

    static func cases() throws -> [Case] {
        struct File: Decodable { let cases: [Case] }
        return try JSONDecoder().decode(File.self, from: Data(try Fixtures.read("protocol-v1-invite-errors.json")))
            .cases
    }

    @Test(arguments: try cases())
    func reportsTheRecordedError(_ entry: Case) throws {
        guard let expected = entry.error else {
            _ = try Invite(parsing: entry.invite)
            return
        }
        let error = #expect(throws: InviteError.self) { try Invite(parsing: entry.invite) }
        #expect(error?.code == expected)
    }
}
