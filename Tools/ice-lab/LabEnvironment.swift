import CNetNamespace
import Foundation
import ICE

/// The lab `Scripts/natlab run` built, as it describes it in NATLAB_* variables.
struct LabEnvironment: Sendable {
    let prefix: String
    let script: String
    let stun: ICEServerEndpoint
    let turn: ICEServerEndpoint
    let turnUser: String
    let turnPassword: String

    struct Missing: Error, CustomStringConvertible {
        let description: String
    }

    static func fromEnvironment() throws -> LabEnvironment {
        let environment = ProcessInfo.processInfo.environment
        func value(_ name: String) throws -> String {
            guard let value = environment[name], !value.isEmpty else {
                throw Missing(description: "\(name) is not set: run me with Scripts/natlab run -- ice-lab ...")
            }
            return value
        }
        return LabEnvironment(
            prefix: try value("NATLAB_PREFIX"), script: try value("NATLAB_SCRIPT"),
            stun: try ICEServerEndpoint(value("NATLAB_STUN")), turn: try ICEServerEndpoint(value("NATLAB_TURN")),
            turnUser: try value("NATLAB_TURN_USER"), turnPassword: try value("NATLAB_TURN_PASSWORD"))
    }

    func namespace(_ name: String) -> String { "\(prefix)-\(name)" }

    /// Runs a `Scripts/natlab` subcommand against this lab; returns its standard output.
    @discardableResult
    func natlab(_ arguments: String...) throws -> String { try natlab(arguments) }

    @discardableResult
    func natlab(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: script)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Missing(
                description: "natlab \(arguments.joined(separator: " ")) failed (\(process.terminationStatus))")
        }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A host in the lab: a namespace with a GLib loop thread inside it, so every socket libnice opens
/// for agents on this executor belongs to that namespace.
final class LabHost: Sendable {
    let name: String
    let label: String
    let executor: GLibExecutor

    struct EnterFailed: Error, CustomStringConvertible {
        let description: String
    }

    init(name: String, label: String, environment: LabEnvironment) throws {
        self.name = name
        self.label = label
        let namespace = environment.namespace(name)
        executor = try GLibExecutor(name: "lab-\(name)") {
            let error = parley_enter_network_namespace(namespace)
            guard error == 0 else {
                throw EnterFailed(
                    description: "cannot enter network namespace \(namespace): \(String(cString: strerror(error)))")
            }
        }
    }
}
