/// What a display name looks like, for telling the user that two members' names could be taken for
/// one another (`alice` and `аlice` with a Cyrillic а, `álice`, `ａｌｉｃｅ`, `Ian` and `lan`, `rn`
/// and `m`). In the spirit of the skeleton of Unicode TS #39 §4, with a small table instead of its
/// full confusables data: marks and invisible characters dropped, Latin letters in any style
/// (accented, fullwidth, mathematical, circled) reduced to their base letter, the Cyrillic and
/// Greek letters drawn like Latin ones mapped to them, the usual digit and letter look-alikes
/// folded. Like TS #39 it keeps case (`ALICE` and `alice` do not look alike). Local policy:
/// nothing on the wire depends on it, so a fuller table can come later without a protocol change.
public struct NameSkeleton: Hashable, Sendable {
    public let value: String

    public init(_ name: String) {
        var scalars: [Unicode.Scalar] = []
        for scalar in name.unicodeScalars {
            switch scalar.properties.generalCategory {
            case .nonspacingMark, .enclosingMark, .spacingMark, .format, .control: continue
            default: break
            }
            if scalar.properties.isWhitespace {
                if !scalars.isEmpty, scalars.last != " " { scalars.append(" ") }
                continue
            }
            let plain = Self.latinBase(of: scalar) ?? scalar
            if Self.lookLikeSmallL.contains(plain) {
                scalars.append("l")
            } else if plain.value > 0x7F, let lower = plain.properties.lowercaseMapping.unicodeScalars.first,
                let latin = Self.latinLookAlike[lower]
            {
                // Same case as the original: А (Cyrillic) looks like A, а like a.
                let upper = plain.properties.isUppercase
                scalars.append(contentsOf: upper ? Array(latin.properties.uppercaseMapping.unicodeScalars) : [latin])
            } else {
                scalars.append(Self.latinLookAlike[plain] ?? plain)
            }
        }
        while scalars.last == " " { scalars.removeLast() }
        var text = String(String.UnicodeScalarView(scalars))
        for (pair, single) in [("rn", "m"), ("vv", "w"), ("cl", "d")] {
            text = text.replacing(pair, with: single)
        }
        value = text
    }

    /// The plain Latin letter or digit of a styled one (`é`, `ａ`, `𝐚`, `ⓐ`), from its Unicode
    /// name; nil for anything else.
    static func latinBase(of scalar: Unicode.Scalar) -> Unicode.Scalar? {
        if (0xFF01...0xFF5E).contains(scalar.value) { return Unicode.Scalar(scalar.value - 0xFEE0) }  // fullwidth
        guard scalar.value > 0x7F, let name = scalar.properties.name else { return nil }
        let words = name.split(separator: " ")
        guard let first = words.first, ["LATIN", "MATHEMATICAL", "CIRCLED", "PARENTHESIZED", "SQUARED"].contains(first)
        else { return nil }
        for (index, word) in words.enumerated() where word == "SMALL" || word == "CAPITAL" {
            var next = index + 1
            if next < words.count, words[next] == "LETTER" { next += 1 }
            guard next < words.count, words[next].count == 1, let letter = words[next].unicodeScalars.first,
                ("A"..."Z").contains(letter)
            else { continue }
            return word == "SMALL" ? Unicode.Scalar(letter.value + 0x20) : letter
        }
        return nil
    }

    static let lookLikeSmallL: Set<Unicode.Scalar> = ["I", "|", "1", "\u{0406}", "\u{04C0}", "\u{0399}"]

    /// Lowercase Cyrillic and Greek letters (and two digits) drawn like a Latin letter.
    static let latinLookAlike: [Unicode.Scalar: Unicode.Scalar] = [
        // Cyrillic
        "\u{0430}": "a", "\u{0432}": "b", "\u{0441}": "c", "\u{0501}": "d", "\u{0435}": "e", "\u{0451}": "e",
        "\u{0261}": "g", "\u{04BB}": "h", "\u{0456}": "i", "\u{0457}": "i", "\u{0458}": "j", "\u{043A}": "k",
        "\u{04CF}": "l", "\u{043C}": "m", "\u{043D}": "h", "\u{043E}": "o", "\u{0440}": "p", "\u{051B}": "q",
        "\u{0433}": "r", "\u{0455}": "s", "\u{0442}": "t", "\u{0443}": "y", "\u{051D}": "w", "\u{0445}": "x",
        // Greek
        "\u{03B1}": "a", "\u{03B2}": "b", "\u{03B5}": "e", "\u{03B7}": "n", "\u{03B9}": "i", "\u{03BA}": "k",
        "\u{03BD}": "v", "\u{03BF}": "o", "\u{03C1}": "p", "\u{03C4}": "t", "\u{03C5}": "u", "\u{03C7}": "x",
        "\u{03B3}": "y", "\u{03C9}": "w",
        // Digits
        "0": "o", "5": "s",
    ]
}
