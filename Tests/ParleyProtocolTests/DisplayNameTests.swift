import Testing

@testable import ParleyProtocol

/// Display names (§6.5.1) and when two of them look alike (issue 15, finding 4).
@Suite("Display names")
struct DisplayNameTests {
    @Test(arguments: [
        ("Alice", true),
        ("Zoë Ørsted", true),
        ("李小龍", true),
        ("Alice 🎧", true),
        ("👩\u{200D}💻 Ada", true),  // a zero-width joiner inside an emoji sequence
        ("🏳\u{FE0F}\u{200D}🌈", true),
        ("ali\u{200B}ce", false),  // zero-width space (Cf)
        ("alice\u{200D}", false),  // a joiner outside an emoji sequence
        ("a\u{200D}b", false),
        ("\u{202E}ecila", false),  // right-to-left override
        ("soft\u{00AD}hyphen", false),
        ("tab\there", false),
        (" alice", false),
    ])
    func namesAreCheckedAsSpecified(name: String, valid: Bool) {
        let accepted = (try? Hello.validateDisplayName(name)) != nil
        #expect(accepted == valid)
    }

    @Test(arguments: [
        ("alice", "\u{0430}lice", true),  // Cyrillic а
        ("ALICE", "\u{0410}LICE", true),  // Cyrillic А
        ("alice", "ALICE", false),  // case is seen
        ("alice", "álice", true),
        ("alice", "a\u{0301}lice", true),  // a with a combining acute
        ("alice", "ａｌｉｃｅ", true),  // fullwidth
        ("alice", "𝐚𝐥𝐢𝐜𝐞", true),  // mathematical bold
        ("Ian", "lan", true),
        ("bob0", "bobo", true),
        ("marnie", "mamie", true),
        ("alice", "alicia", false),
        ("alice", "bob", false),
        ("Анна", "Anna", false),  // Cyrillic н is not a Latin n (it looks like H)
    ])
    func lookAlikes(first: String, second: String, alike: Bool) {
        #expect(
            (NameSkeleton(first) == NameSkeleton(second)) == alike,
            "\(NameSkeleton(first).value) vs \(NameSkeleton(second).value)")
    }
}
