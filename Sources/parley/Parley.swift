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
        abstract: "Make invites, and control a running parleyd: join, leave, status, mute, verify, watch, record.",
        version: ParleyVersion.string,
        subcommands: [
            MakeInvite.self, Join.self, Leave.self, Status.self, Mute.self, Unmute.self, Verify.self, Watch.self,
            Record.self,
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
        if !verification.recording.isEmpty {
            print("recording the meeting now:")
            for member in verification.recording { print("  \(member.id)  \(member.name)") }
        }
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
        abstract: "Print live events: joins, leaves, link changes, who is speaking. Ctrl-C stops.")
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

/// `parley record start [PATH]` / `parley record stop`: the meeting as this node hears it, to an
/// Ogg Opus file; every member whose Parley speaks protocol version 3 is told (PROTOCOL.md §14.2).
struct Record: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Record the meeting as you hear it (Ogg Opus); everyone in the meeting is shown that you record.",
        subcommands: [Start.self, Stop.self])

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start recording: the others' audio and your microphone, with a who-spoke-when file beside it.",
            discussion: """
                Without PATH the file goes to $XDG_DATA_HOME/parley/recordings (~/.local/share/parley/recordings). \
                The file is created with mode 0600 and never overwrites one that exists.
                """)
        @OptionGroup var daemon: DaemonOptions
        @Argument(help: "The file to write (e.g. meeting.opus); it must not exist.")
        var path: String?

        func run() throws {
            let response = try daemon.send(ControlRequest(.recordStart, path: path.map(Self.absolute)))
            print(response.message ?? "recording")
        }

        /// The daemon runs elsewhere: a relative path is the caller's, made absolute here.
        static func absolute(_ path: String) -> String {
            guard !path.hasPrefix("/") else { return path }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            guard getcwd(&buffer, buffer.count) != nil else { return path }
            let length = buffer.firstIndex(of: 0) ?? buffer.count
            let directory = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return (directory == "/" ? "" : directory) + "/" + path
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop recording and close the file.")
        @OptionGroup var daemon: DaemonOptions

        func run() throws {
            let response = try daemon.send(ControlRequest(.recordStop))
            print(response.message ?? "stopped recording")
        }
    }
}
