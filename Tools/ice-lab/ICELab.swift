import ArgumentParser
import Foundation
import ICE

/// `ice-lab matrix`: the NAT matrix with real libnice agents in the lab's namespaces. Run it
/// through `Scripts/natlab run -- ice-lab matrix` (or `Scripts/natlab test`), which builds the lab.
@main
struct ICELab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ice-lab", abstract: "ICE in the NAT lab.", subcommands: [Matrix.self])

    struct Matrix: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Connect every NAT pairing, without and with TURN; print a table; fail on a surprise.")

        @Option(help: "Run only scenarios whose name contains this text.")
        var only: String?

        func run() async throws {
            let environment = try LabEnvironment.fromEnvironment()
            let runner = try LabRunner(environment: environment)
            defer { runner.shutdown() }
            let scenarios = LabScenario.matrix.filter { only == nil || $0.name.contains(only!) }
            let started = ContinuousClock.now
            var results: [LabResult] = []
            LabTable.printHeader()
            for scenario in scenarios {
                let result = await runner.run(scenario)
                LabTable.show(result)
                results.append(result)
            }
            let failed = results.filter { !$0.passed }
            emit(
                "\n\(results.count - failed.count)/\(results.count) scenarios as expected in \(Milliseconds(started.duration(to: .now)))"
            )
            for result in failed {
                emit(
                    "UNEXPECTED \(result.scenario.name) [\(result.scenario.relay.rawValue)]: \(result.problems.joined(separator: "; "))"
                )
            }
            if !failed.isEmpty { throw ExitCode.failure }
        }
    }
}

/// The printed table: pair, relay, expected, route chosen, pair types, time to connected, RTT.
enum LabTable {
    static let columns: [(String, Int)] = [
        ("pair", 40), ("relay", 9), ("expect", 8), ("route", 8), ("candidates", 16), ("connected", 10), ("RTT", 9),
        ("", 0),
    ]

    static func printHeader() {
        emit(row(columns.map(\.0)))
        emit(String(repeating: "-", count: columns.map(\.1).reduce(0, +) + 20))
    }

    static func show(_ result: LabResult) {
        let cells = [
            result.scenario.name, result.scenario.relay.rawValue, result.scenario.expected.description, result.outcome,
            result.pair, result.connectedIn.map { Milliseconds($0).description } ?? "-",
            result.roundTrip.map { Milliseconds($0).description } ?? "-",
            (result.passed ? "ok" : "UNEXPECTED") + (result.detail.isEmpty ? "" : "  " + result.detail),
        ]
        emit(row(cells))
    }

    private static func row(_ cells: [String]) -> String {
        zip(cells, columns).map { cell, column in
            cell.count >= column.1 ? cell + " " : cell + String(repeating: " ", count: column.1 - cell.count)
        }.joined()
    }
}

/// Writes a line to standard output at once (unbuffered), so the table grows as scenarios finish.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
