import ArgumentParser
import ParleyCore

@main
struct ParleyRendezvous: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley-rendezvous",
        abstract: "The Parley rendezvous: passes sealed signaling between nodes and learns nothing else.",
        discussion: "Not yet serving: this build only prints its version and usage.",
        version: ParleyVersion.string
    )

    func run() throws {
        print(Self.helpMessage())
    }
}
