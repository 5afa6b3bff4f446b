import ArgumentParser
import ParleyCore

@main
struct Parley: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley",
        abstract: "Control a running parleyd: join, leave, status, mute, verify.",
        discussion: "Not yet able to talk to a daemon: this build only prints its version and usage.",
        version: ParleyVersion.string
    )

    func run() throws {
        print(Self.helpMessage())
    }
}
