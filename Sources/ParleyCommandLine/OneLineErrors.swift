public import ArgumentParser
import ParleyCore

#if canImport(Glibc)
import Glibc
#endif

/// How Parley's executables end on an error: one line on standard error, `<tool>: <what is
/// wrong>`, and a non-zero exit. (ArgumentParser's own main adds usage lines, and its "Missing
/// value" for `--bitrate -5` does not say what is wrong; the options that take numbers parse
/// unconditionally and are checked by their commands.) Help and version still print in full.
public enum OneLineErrors {
    /// Ends the process for `error` thrown while parsing or running `command`.
    public static func exit(_ command: any ParsableCommand.Type, for error: any Error) -> Never {
        let code = command.exitCode(for: error)
        if code == .success {
            print(command.fullMessage(for: error))
            Glibc.exit(0)
        }
        let message = command.message(for: error)
        let line = message.split(separator: "\n").first.map(String.init) ?? message
        StandardStreams.printError("\(command.configuration.commandName ?? "parley"): \(line)")
        Glibc.exit(max(code.rawValue, 1))
    }
}

extension ParsableCommand {
    /// Parses `arguments` (default: the process's) and runs the command; errors as `OneLineErrors`.
    public static func mainWithOneLineErrors(_ arguments: [String]? = nil) {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            OneLineErrors.exit(self, for: error)
        }
    }
}

extension AsyncParsableCommand {
    /// Parses the process's arguments and runs the command; errors as `OneLineErrors`.
    public static func mainWithOneLineErrors() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            OneLineErrors.exit(self, for: error)
        }
    }
}
