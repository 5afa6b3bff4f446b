import ArgumentParser
import ParleyCore

@main
struct Parleyd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parleyd",
        abstract: "The Parley node daemon: one end-to-end encrypted, peer-to-peer audio meeting.",
        discussion: "Not yet able to join meetings: this build only prints its version and usage.",
        version: ParleyVersion.string
    )

    func run() throws {
        print(Self.helpMessage())
    }
}
