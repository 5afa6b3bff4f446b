import ParleyTestSupport
import Sodium
import Testing

@testable import ParleyProtocol

@Suite("Security code and identity pins (§11)")
struct SecurityCodeAndPinsTests {
    static let room = [UInt8](repeating: 0x11, count: 32)
    static let alice = [UInt8](repeating: 0xA1, count: 32)
    static let bob = [UInt8](repeating: 0xB0, count: 32)
    static let carol = [UInt8](repeating: 0xC4, count: 32)

    @Test func twelveDigitsInGroupsOfFour() {
        let code = SecurityCode(viewHash: Array(repeating: 7, count: 32), nonces: [Self.alice, Self.bob])
        #expect(code.digits.count == 12 && code.digits.allSatisfy(\.isNumber))
        #expect(code.description.count == 14)
        #expect(code.description.split(separator: " ").map(\.count) == [4, 4, 4])
    }

    @Test func pinsAreTrustedOnFirstUseAndAKeyChangeIsAnError() throws {
        let directory = try TemporaryDirectory()
        let file = IdentityPins.File(stateDirectory: directory.path, roomID: Self.room)
        var pins = try file.load()
        #expect(try pins.check(displayName: "Alice", identityKey: Self.alice) == .new)
        try pins.pin(displayName: "Alice", identityKey: Self.alice)
        try pins.pin(displayName: "Bob Smith", identityKey: Self.bob)
        try file.save(pins)
        #expect(try fileMode(file.path) == 0o600)

        let reloaded = try file.load()
        #expect(reloaded.pins.count == 2)
        #expect(try reloaded.check(displayName: "Alice", identityKey: Self.alice) == .known)
        #expect(try reloaded.check(displayName: "Bob Smith", identityKey: Self.bob) == .known)
        #expect(try reloaded.check(displayName: "Robert", identityKey: Self.bob) == .renamed(from: "Bob Smith"))
        let changed = #expect(throws: IdentityKeyChanged.self) {
            try reloaded.check(displayName: "Alice", identityKey: Self.carol)
        }
        #expect(changed?.description.contains("Alice's identity key changed") == true)
        #expect(changed?.description.contains("security code") == true)

        // Pins are per room.
        let elsewhere = try IdentityPins.File(
            stateDirectory: directory.path, roomID: [UInt8](repeating: 0x22, count: 32)
        )
        .load()
        #expect(try elsewhere.check(displayName: "Alice", identityKey: Self.carol) == .new)

        // Accepting the new key (after checking the code) replaces the pin.
        var accepted = reloaded
        try accepted.pin(displayName: "Alice", identityKey: Self.carol)
        try file.save(accepted)
        #expect(try file.load().check(displayName: "Alice", identityKey: Self.carol) == .known)
        #expect(throws: StateFileError.self) { try accepted.pin(displayName: "Eve\nMallory", identityKey: Self.alice) }
    }

    @Test func aDamagedPinFileIsAClearError() throws {
        let directory = try TemporaryDirectory()
        let file = IdentityPins.File(stateDirectory: directory.path, roomID: Self.room)
        var pins = try file.load()
        try pins.pin(displayName: "Alice", identityKey: Self.alice)
        try file.save(pins)
        try writeFile(file.path, Array("not hex Alice\n".utf8))
        let error = #expect(throws: StateFileError.self) { try file.load() }
        #expect(error?.description.contains("line 1") == true)
    }
}
