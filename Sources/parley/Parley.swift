import ArgumentParser
import ControlAPI
import ParleyCommandLine
import ParleyCore
import ParleyProtocol
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `parley`: the command line for a running `parleyd`. It talks to the daemon only through the
/// typed control client, and never links the media libraries.
@main
struct Parley: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley",
        abstract:
            "Make invites, and control a running parleyd: join, leave, status, mute, verify, watch, say, chat, devices, volume, record.",
        version: ParleyVersion.string,
        subcommands: [
            MakeInvite.self, Join.self, Leave.self, Status.self, Mute.self, Unmute.self, Verify.self, Watch.self,
            Say.self, Chat.self, Devices.self, Input.self, Output.self, Volume.self, TestAudio.self,
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
    @Flag(help: "Redraw the table in place once a second, with who is speaking; Ctrl-C stops.")
    var watch = false

    func validate() throws {
        if json && watch { throw ValidationError("--json and --watch do not go together; use `parley watch --json`") }
    }

    func run() throws {
        if watch { return try LiveStatus(daemon: daemon).run() }
        let response = try daemon.send(ControlRequest(.status))
        guard let status = response.status else { throw CLIError(description: "parleyd sent no status") }
        if json {
            print(try ControlCodec.prettyJSON(status))
        } else {
            print(StatusTable.render(status))
        }
    }
}

/// Set by SIGINT or SIGTERM while `status --watch` runs.
let stopWatching = Atomic<Bool>(false)

/// `parley status --watch`: the status table redrawn in place once a second. On a terminal the
/// cursor is hidden while it runs and each frame overwrites the last (the cursor goes back up
/// over it); elsewhere each frame follows the last. Ctrl-C ends it with the cursor shown again
/// and the last table left on screen.
struct LiveStatus {
    let daemon: DaemonOptions

    func run() throws {
        var action = sigaction()
        // No SA_RESTART: a read from the daemon in progress returns at once.
        action.__sigaction_handler.sa_handler = { _ in stopWatching.store(true, ordering: .relaxed) }
        sigaction(SIGINT, &action, nil)
        sigaction(SIGTERM, &action, nil)
        // A parent may have left them blocked (the mask is inherited through fork and exec).
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        sigprocmask(SIG_UNBLOCK, &signals, nil)
        let terminal = isatty(STDOUT_FILENO) != 0
        if terminal { Self.write("\u{1B}[?25l") }  // hide the cursor
        defer { if terminal { Self.write("\u{1B}[?25h") } }
        var shown = 0
        while !stopWatching.load(ordering: .relaxed) {
            let lines = frame()
            var text = terminal && shown > 0 ? "\u{1B}[\(shown)F" : ""  // back to the first line drawn
            for line in lines { text += line + (terminal ? "\u{1B}[K\n" : "\n") }
            text += terminal ? "\u{1B}[J" : "\n"  // clear what the last frame had below
            Self.write(text)
            shown = lines.count
            // Sleep a second in small steps, so Ctrl-C ends it at once.
            for _ in 0..<20 where !stopWatching.load(ordering: .relaxed) { usleep(50_000) }
        }
    }

    /// One frame: a heading with the time, then `parley status`'s table (or why there is none).
    func frame() -> [String] {
        var lines = ["parley status --watch · \(Self.clock()) · Ctrl-C stops"]
        do {
            let response = try daemon.client.send(ControlRequest(.status))
            guard let status = response.status else { return lines + ["parleyd sent no status"] }
            lines += StatusTable.render(status).split(separator: "\n", omittingEmptySubsequences: false).map(
                String.init)
            // The chat's latest line, so a live table shows what was just said.
            if let last = status.chat.last { lines += ["", "chat: " + ChatLine.render(last)] }
        } catch {
            lines.append("\(error)")
        }
        return lines
    }

    /// The local time as HH:MM:SS.
    static func clock() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    }

    static func write(_ text: String) {
        print(text, terminator: "")
        StandardStreams.flushOutput()
    }
}

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the sound server's microphones (sources) and speakers (sinks); * marks the ones in use.")
    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        guard let devices = try daemon.send(ControlRequest(.devices)).devices else {
            throw CLIError(description: "parleyd sent no device list")
        }
        if json { return print(try ControlCodec.prettyJSON(devices)) }
        for (title, list, chosen, fallback) in [
            ("sources (microphones; `parley input NAME`)", devices.sources, devices.chosenInput, devices.inputFallback),
            ("sinks (speakers; `parley output NAME`)", devices.sinks, devices.chosenOutput, devices.outputFallback),
        ] {
            print(title + ": chosen \(chosen)" + (fallback ? " (missing: the default stands in)" : ""))
            if list.isEmpty { print("  none") }
            for device in list {
                let marks = (device.inUse ? "*" : " ") + " "
                let detail = [device.description, device.isDefault ? "default" : nil].compactMap { $0 }.filter {
                    !$0.isEmpty
                }
                print(marks + device.name + (detail.isEmpty ? "" : "  (" + detail.joined(separator: ", ") + ")"))
            }
        }
    }
}

/// `SOURCE|default` → a device name, nil for the server's default.
func deviceArgument(_ text: String) -> String? { text == "default" ? nil : text }

struct Input: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Switch the microphone without leaving the meeting (`parley devices` lists the sources).")
    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "A source name, or `default` for the sound server's default.")
    var source: String

    func run() throws {
        print(try daemon.send(ControlRequest(.input, device: deviceArgument(source))).message ?? "switched")
    }
}

struct Output: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Switch the speaker without leaving the meeting (`parley devices` lists the sinks).")
    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "A sink name, or `default` for the sound server's default.")
    var sink: String

    func run() throws {
        print(try daemon.send(ControlRequest(.output, device: deviceArgument(sink))).message ?? "switched")
    }
}

struct Volume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set how loud you hear one member (0–200 %, 0 mutes them for you only), or list the volumes.",
        discussion: "Only your own playback changes; the member sends as before. Kept for the meeting.")
    @OptionGroup var daemon: DaemonOptions
    @Argument(help: "The member's name or id (as `parley status` shows them).")
    var peer: String?
    @Argument(help: "The volume in percent: 0 to 200 (100 is unchanged).")
    var percent: String?

    func validate() throws {
        guard let percent else {
            if peer != nil { throw ValidationError("give a volume too, e.g. `parley volume \(peer!) 50`") }
            return
        }
        if PeerVolume.percent(parsing: percent) == nil {
            throw ValidationError("\(PeerVolume.rule), got \"\(percent)\"")
        }
    }

    func run() throws {
        let request = ControlRequest(.volume, peer: peer, percent: percent.flatMap(PeerVolume.percent(parsing:)))
        let volumes = try daemon.send(request).volumes ?? []
        if let peer, let percent {
            print("\(peer): \(percent.hasSuffix("%") ? percent : percent + " %")")
            return
        }
        if volumes.isEmpty { print("no peers") }
        for volume in volumes {
            print("\(volume.id)  \(volume.name)  " + (volume.percent == 0 ? "muted (0 %)" : "\(volume.percent) %"))
        }
    }
}

struct TestAudio: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test-audio",
        abstract: "Play a short tone on the speaker and show the microphone's level; works before joining.")
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        let client = ControlClient(path: daemon.socket, timeoutSeconds: 30)
        let response: ControlResponse
        do {
            response = try client.send(ControlRequest(.testAudio))
        } catch {
            throw CLIError(description: error.description)
        }
        guard let test = response.audioTest else { throw CLIError(description: "parleyd sent no result") }
        print("played \(test.toneHz) Hz for \(StatusTable.format(test.seconds, decimals: 1)) s on \(test.output)")
        print(
            "microphone \(test.input): average \(StatusTable.format(test.inputLevelDbfs, decimals: 1)) dBFS, "
                + "loudest \(StatusTable.format(test.inputPeakDbfs, decimals: 1)) dBFS  "
                + Self.meter(test.inputPeakDbfs))
        if test.inputPeakDbfs < -60 {
            print("the microphone heard next to nothing: check that it is on and chosen (`parley devices`)")
        }
    }

    /// A bar of 30 cells from -90 to 0 dBFS.
    static func meter(_ dBFS: Double) -> String {
        let cells = max(0, min(30, Int(((dBFS + 90) / 3).rounded())))
        return "[" + String(repeating: "#", count: cells) + String(repeating: ".", count: 30 - cells) + "]"
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
            // Said on standard error, so that `--json` output stays one event per line.
            try daemon.client.watch(subscribed: {
                StandardStreams.printError("parley watch: following \(daemon.client.path); Ctrl-C stops")
            }) { event in
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
