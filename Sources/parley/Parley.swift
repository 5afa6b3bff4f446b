import ArgumentParser
import ControlAPI
import ParleyCore

#if canImport(Glibc)
import Glibc
#endif

/// `parley`: the command line for a running `parleyd`. It talks to the daemon only through the
/// typed control client, and never links the media libraries.
@main
struct Parley: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley",
        abstract: "Control a running parleyd: join, leave, status, mute, verify.",
        version: ParleyVersion.string,
        subcommands: [Join.self, Leave.self, Status.self, Mute.self, Unmute.self, Verify.self, Watch.self]
    )

    /// Every error is one clear line on stderr and a non-zero exit (ArgumentParser's default
    /// adds usage lines; help and version still print in full).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
            } else {
                let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
                StandardStreams.printError("parley: \(message)")
            }
            Glibc.exit(code.rawValue)
        }
    }
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

struct Join: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Join the meeting an invite string names.")
    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "The invite string (parley1:…). Quote it; line breaks from chat apps are fine.")
    var invite: String

    func run() throws {
        try daemon.send(ControlRequest(.join, invite: invite))
        print("joining; follow with `parley status` or `parley watch`")
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
