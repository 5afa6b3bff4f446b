import ParleyCore
import ParleyTestSupport
import Sodium
import Testing

@testable import ParleyProtocol

@Suite("Invite strings (§2)")
struct InviteTests {
    static let secret = SecureBytes(copying: (0..<32).map { UInt8($0) })

    static func sample(pin: Bool = true, turn: Bool = true) throws -> Invite {
        try Invite(
            roomSecret: secret, rendezvous: RendezvousURL(parsing: "wss://rv.example.org:7777/parley"),
            tlsPin: pin ? [UInt8](repeating: 0xAB, count: 32) : nil,
            turnHints: turn
                ? [try TURNHint(uri: "turn:turn.example.org:3478?transport=udp", username: "u", password: "p")] : [])
    }

    @Test func roundTripsWithEveryField() throws {
        for invite in [try Self.sample(), try Self.sample(pin: false), try Self.sample(turn: false)] {
            let text = invite.string
            #expect(text.hasPrefix("parley1:"))
            #expect(text.dropFirst(8).allSatisfy { "abcdefghijklmnopqrstuvwxyz234567".contains($0) })
            #expect(try Invite(parsing: text) == invite)
        }
        let minted = try Invite.mint(rendezvous: RendezvousURL(parsing: "ws://192.0.2.1:7777"))
        #expect(try Invite(parsing: minted.string) == minted)
        #expect(minted.roomSecret != (try Invite.mint(rendezvous: minted.rendezvous)).roomSecret)
    }

    @Test func descriptionNeverShowsTheSecret() throws {
        let invite = try Self.sample()
        #expect(!invite.description.contains(invite.string.dropFirst(8).prefix(10)))
        #expect(invite.description.contains("redacted"))
        #expect(invite.description.contains("wss://rv.example.org:7777/parley"))
        #expect(!invite.turnHints[0].description.contains("password p"))
    }

    /// What chat apps and editors do to a pasted string: line breaks, indentation, zero-width
    /// spaces, quotes, an autocapitalized prefix, upper case.
    @Test func survivesCopyPaste() throws {
        let invite = try Self.sample()
        let text = invite.string
        let body = Array(text.dropFirst(8))
        let broken = stride(from: 0, to: body.count, by: 40).map { String(body[$0..<min($0 + 40, body.count)]) }
        let variants = [
            "  \(text)\n",
            "parley1:\n" + broken.joined(separator: "\r\n   "),
            "\"\(text)\"",
            "<\(text)>",
            "`\(text)`",
            "“\(text)”",
            "Parley1:" + String(body),
            text.uppercased(),
            "parley1:" + broken.joined(separator: "\u{200B}"),
            "\u{FEFF}" + text + "\u{00A0}",
        ]
        for variant in variants {
            #expect(try Invite(parsing: variant) == invite, "\(variant.prefix(30))")
        }
    }

    @Test func namesWhatIsWrong() throws {
        let text = try Self.sample().string
        let body = Array(text.dropFirst(8))
        func failure(_ input: String) -> InviteError? {
            do {
                _ = try Invite(parsing: input)
                return nil
            } catch {
                return error
            }
        }
        #expect(failure("") == .empty)
        #expect(failure("   \n") == .empty)
        #expect(failure("https://example.org/join") == .notAnInvite)
        #expect(failure("hello world") == .notAnInvite)
        #expect(failure("parley2:" + String(body)) == .unsupportedVersion("2"))
        #expect(failure("parley10:" + String(body)) == .unsupportedVersion("10"))
        // Truncated anywhere: the declared length tells.
        let expected = body.count
        #expect(failure(String(text.dropLast(1))) == .truncated(characters: expected - 1, expected: expected))
        #expect(failure(String(text.dropLast(30))) == .truncated(characters: expected - 30, expected: expected))
        #expect(failure("parley1:" + String(body.prefix(2))) == .truncated(characters: 2, expected: 64))
        #expect(failure(text + "abc") == .extraCharacters(count: 3, expected: expected))
        // A typo: a changed letter, or a digit that base32 does not have.
        var typo = body
        typo[50] = typo[50] == "a" ? "b" : "a"
        #expect(failure("parley1:" + String(typo)) == .checksumMismatch)
        var badCharacter = body
        badCharacter[20] = "1"
        #expect(failure("parley1:" + String(badCharacter)) == .invalidCharacter("1", position: 21))
        for error in [InviteError.checksumMismatch, .truncated(characters: 9, expected: 10), .unsupportedVersion("2")] {
            #expect(!error.description.isEmpty)
        }
    }

    /// Every single-character substitution in the body is caught (by the checksum, or by the
    /// length it changes), never accepted as a different invite.
    @Test func everySubstitutionIsRejected() throws {
        let invite = try Self.sample(pin: false, turn: false)
        let body = Array(invite.string.dropFirst(8))
        var accepted = 0
        for index in body.indices {
            for replacement in "a7" {
                guard body[index] != replacement else { continue }
                var typo = body
                typo[index] = replacement
                if let parsed = try? Invite(parsing: "parley1:" + String(typo)) {
                    // Only the unused low bits of the last character may change harmlessly.
                    #expect(parsed == invite && index == body.count - 1, "substitution at \(index) accepted")
                    accepted += 1
                }
            }
        }
        #expect(accepted <= 1)
    }

    @Test(arguments: [
        ("ws://rv.example.org", "ws://rv.example.org", UInt16(80), "/"),
        ("WSS://RV.Example.ORG:443/", "wss://rv.example.org:443", 443, "/"),
        ("wss://rv.example.org:8443/a/b%20c", "wss://rv.example.org:8443/a/b%20c", 8443, "/a/b%20c"),
        ("ws://[2001:db8::1]:7777", "ws://[2001:db8::1]:7777", 7777, "/"),
        ("ws://192.0.2.7:7777/x", "ws://192.0.2.7:7777/x", 7777, "/x"),
    ])
    func parsesRendezvousURLs(text: String, canonical: String, port: UInt16, path: String) throws {
        let url = try RendezvousURL(parsing: text)
        #expect(url.description == canonical)
        #expect(url.port == port)
        #expect(url.path == path)
        #expect(try RendezvousURL(parsing: url.description) == url)
    }

    @Test(arguments: [
        "http://rv.example.org", "rv.example.org:7777", "ws://", "ws://user@rv.example.org", "ws://rv.example.org:0",
        "ws://rv.example.org:70000", "ws://rv.example.org:12ab", "ws://rv.example.org/?q=1", "ws://rv.example.org/#x",
        "ws://-bad-.example.org", "ws://rv..example.org", "ws://[2001:db8::1", "ws://[zz::1]",
        "ws://rv.example.org/a b",
        "ws://rv_example.org", "wss://rv.example.org/%zz",
    ])
    func refusesBadRendezvousURLs(text: String) {
        #expect(throws: InviteError.self) { try RendezvousURL(parsing: text) }
    }

    @Test func refusesBadPinsAndTURNHints() throws {
        let ws = try RendezvousURL(parsing: "ws://rv.example.org")
        let wss = try RendezvousURL(parsing: "wss://rv.example.org")
        #expect(throws: InviteError.pinWithoutTLS) {
            try Invite(roomSecret: Self.secret, rendezvous: ws, tlsPin: [UInt8](repeating: 1, count: 32))
        }
        #expect(throws: InviteError.badTLSPin(length: 20)) {
            try Invite(roomSecret: Self.secret, rendezvous: wss, tlsPin: [UInt8](repeating: 1, count: 20))
        }
        #expect(throws: InviteError.self) { try TURNHint(uri: "stun:turn.example.org") }
        #expect(throws: InviteError.self) { try TURNHint(uri: "turn:turn.example.org?transport=sctp") }
        #expect(throws: InviteError.self) { try TURNHint(uri: "turn:turn.example.org", username: "u") }
        let hint = try TURNHint(uri: "TURNS:[2001:db8::2]:5349?transport=tcp")
        #expect(hint.uri == "turns:[2001:db8::2]:5349?transport=tcp")
        #expect(hint.isTLS && hint.port == 5349 && hint.transport == "tcp" && !hint.hasCredentials)
        #expect(try TURNHint(uri: "turn:t.example.org").port == 3478)
    }

    /// Fields the decoder must handle although this encoder never writes them: an optional
    /// unknown field (skipped), a required unknown field (refused), duplicates, a missing URL.
    @Test func fieldRulesOfTheBinaryForm() throws {
        func encode(_ fields: [(UInt8, [UInt8])]) -> String {
            var body: [UInt8] = []
            (0..<32).forEach { body.append(UInt8($0)) }
            for (tag, value) in fields { body += [tag, UInt8(value.count)] + value }
            let length = 2 + body.count + 4
            let withLength = [UInt8(length >> 8), UInt8(length & 0xFF)] + body
            return "parley1:" + Base32.encode(withLength + Invite.checksum(withLength))
        }
        let url: (UInt8, [UInt8]) = (0x01, Array("ws://rv.example.org".utf8))
        #expect(try Invite(parsing: encode([url, (0x99, [1, 2, 3])])).rendezvous.host == "rv.example.org")
        #expect(throws: InviteError.unknownRequiredField(0x04)) { try Invite(parsing: encode([url, (0x04, [1])])) }
        #expect(throws: InviteError.duplicateField("rendezvous URL")) { try Invite(parsing: encode([url, url])) }
        #expect(throws: InviteError.missingRendezvousURL) { try Invite(parsing: encode([])) }
        #expect(throws: InviteError.badTLSPin(length: 3)) {
            try Invite(parsing: encode([(0x01, Array("wss://rv.example.org".utf8)), (0x02, [1, 2, 3])]))
        }
        #expect(throws: InviteError.self) { try Invite(parsing: encode([url, (0x03, [5, 65])])) }
    }
}
