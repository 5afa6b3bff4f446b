import ArgumentParser
import ControlAPI
import ParleyCommandLine
import ParleyCore
import ParleyProtocol

#if canImport(Glibc)
import Glibc
#endif

/// `parley`: the command line for a running `parleyd`. It talks to the daemon only through the
/// typed control client, and never links the media libraries.
@main
struct Parley: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley",
        abstract: "Make invites, and control a running parleyd: join, leave, status, mute, verify, watch, say, chat.",
        version: ParleyVersion.string,
        subcommands: [
            MakeInvite.self, Join.self, Leave.self, Status.self, Mute.self, Unmute.self, Verify.self, Watch.self,
            Say.self, Chat.self,
        ]
    )

    /// Every error is one clear line on stderr and a non-zero exit (`OneLineErrors`).
    static func main() {
        mainWithOneLineErrors(globalOptionsLast(Array(CommandLine.arguments.dropFirst())))
    }
}

/// `--socket PATH` is global (`parley --socket PATH status`), but ArgumentParser only knows
/// options after the subcommand: move it there.
func globalOptionsLast(_ arguments: [String]) -> [String] {
    var rest: [String] = []
    var moved: [String] = []
    var index = 0
    while index < arguments.count {
        let argument = arguments[index]
        if argument == "--" {
            rest += arguments[index...]
            break
        }
        if argument == "--socket", index + 1 < arguments.count {
            moved += arguments[index...(index + 1)]
            index += 2
            continue
        }
        if argument.hasPrefix("--socket=") {
            moved.append(argument)
        } else {
            rest.append(argument)
        }
        index += 1
    }
    return rest + moved
}

/// Options every subcommand that talks to the daemon shares.
struct DaemonOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's control socket.")
    var socket: String = ControlSocketPath.defaultPath

    var client: ControlClient { ControlClient(path: socket) }
}

/// A `ControlError` printed as its one-line description.
struct CLIError: Error, CustomStringConvertible {
    let description: String
}

extension DaemonOptions {
    @discardableResult
    func send(_ request: ControlRequest) throws -> ControlResponse {
        do {
            return try client.send(request)
        } catch {
            throw CLIError(description: error.description)
        }
    }
}

/// `parley invite`: mints a new meeting locally (a fresh random room secret); no daemon needed.
struct MakeInvite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "invite",
        abstract: "Create a new meeting's invite for a rendezvous; share it only with the participants.",
        discussion: """
            The TLS pin is the SHA-256 of the rendezvous certificate's public key (DER SubjectPublicKeyInfo), \
            64 hex digits: openssl x509 -in rv.crt -pubkey -noout | openssl pkey -pubin -outform der | sha256sum
            """)
    @Option(help: "The rendezvous URL, ws://HOST:PORT or wss://HOST:PORT.")
    var rendezvous: String
    @Option(help: "Pin the rendezvous' TLS key (wss:// only): 64 hex digits.")
    var tlsPin: String?
    @Option(help: "A TURN server for participants, turn:HOST:PORT[?transport=udp|tcp] (repeatable).")
    var turn: [String] = []

    func run() throws {
        do {
            let url = try RendezvousURL(parsing: rendezvous)
            let pin = try tlsPin.map(Self.pin)
            let hints = try turn.map { try TURNHint(uri: $0) }
            print(try Invite.mint(rendezvous: url, tlsPin: pin, turnHints: hints).string)
        } catch let error as InviteError {
            throw CLIError(description: "cannot make an invite: \(error)")
        }
    }

    static func pin(_ text: String) throws -> [UInt8] {
        let digits = Array(text.lowercased().utf8)
        guard digits.count == 64, digits.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
            throw CLIError(description: "--tls-pin wants 64 hex digits (SHA-256 of the certificate's public key)")
        }
        return stride(from: 0, to: 64, by: 2).map {
            UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)!
        }
    }
}

struct Join: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Join the meeting an invite string names.")
    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "The invite string (parley1:…). Quote it; line breaks from chat apps are fine.")
    var invite: String

    func validate() throws {
        // Checked here too, so a typo is reported even when no daemon runs.
        do { _ = try Invite(parsing: invite) } catch { throw ValidationError("invalid invite: \(error)") }
    }

    func run() throws {
        let response = try daemon.send(ControlRequest(.join, invite: invite))
        print(response.message ?? "joining")
        print("follow with `parley status` or `parley watch`")
    }
}

struct Leave: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Leave the current meeting.")
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        try daemon.send(ControlRequest(.leave))
        print("left the meeting")
    }
}

struct Mute: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop sending your microphone.")
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        try daemon.send(ControlRequest(.mute))
        print("muted")
    }
}

struct Unmute: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send your microphone again.")
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        try daemon.send(ControlRequest(.unmute))
        print("unmuted")
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the meeting security code; everyone should read the same code aloud.")
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        let response = try daemon.send(ControlRequest(.verify))
        guard let verification = response.verification else {
            throw CLIError(description: "parleyd sent no security code")
        }
        print("security code: \(verification.securityCode)")
        print("covers \(verification.members.count) members:")
        for member in verification.members { print("  \(member.id)  \(member.name)") }
        if !verification.notConnected.isEmpty {
            print("present with the invite but not connected (not covered by the code):")
            for member in verification.notConnected { print("  \(member.id)  \(member.name)") }
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show this node and every peer link.")
    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print JSON: {\"self\": {...}, \"peers\": [...]}.")
    var json = false

    func run() throws {
        let response = try daemon.send(ControlRequest(.status))
        guard let status = response.status else { throw CLIError(description: "parleyd sent no status") }
        if json {
            print(try ControlCodec.prettyJSON(status))
        } else {
            print(StatusTable.render(status))
        }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print live events: joins, leaves, link changes, who is speaking, chat messages. Ctrl-C stops.")
    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print each event as a JSON line.")
    var json = false

    func run() throws {
        do {
            try daemon.client.watch { event in
                if json {
                    print((try? ControlCodec.line(event)).map { String(decoding: $0.dropLast(), as: UTF8.self) } ?? "")
                } else {
                    print(EventLine.render(event))
                }
                StandardStreams.flushOutput()
                return true
            }
        } catch {
            throw CLIError(description: error.description)
        }
    }
}

struct Say: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a chat message to everyone in the meeting (end-to-end encrypted, not stored).",
        discussion: """
            With no TEXT the message is read from standard input (line breaks at its end dropped). \
            At most 4096 bytes of UTF-8; members who join later do not get earlier messages.
            """)
    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "The message; several words are joined with spaces.")
    var text: [String] = []

    /// More than this on standard input is refused without reading on (the daemon refuses
    /// anything above 4096 bytes with the exact size).
    static let inputLimit = 1 << 16

    func run() throws {
        let message = text.isEmpty ? try Self.readStandardInput() : text.joined(separator: " ")
        let response = try daemon.send(ControlRequest(.say, text: message))
        print(response.message ?? "sent")
    }

    static func readStandardInput() throws -> String {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= inputLimit {
            let count = read(STDIN_FILENO, &buffer, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else {
                throw CLIError(description: "cannot read standard input: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes += buffer[..<count]
        }
        guard bytes.count <= inputLimit else {
            throw CLIError(description: "standard input holds more than \(inputLimit) bytes; a message is at most 4096")
        }
        while bytes.last == UInt8(ascii: "\n") || bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CLIError(description: "standard input is not UTF-8 text")
        }
        return text
    }
}

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the meeting's last chat messages (at most 50) with time and sender.")
    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print JSON: [{\"time\", \"from\", \"name\", \"text\"}, ...].")
    var json = false

    func run() throws {
        let messages = try daemon.send(ControlRequest(.chat)).chat ?? []
        if json {
            print(try ControlCodec.prettyJSON(messages))
        } else if messages.isEmpty {
            print("no chat messages yet")
        } else {
            for message in messages { print(ChatLine.render(message)) }
        }
    }
}
