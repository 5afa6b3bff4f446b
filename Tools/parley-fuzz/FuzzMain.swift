#if canImport(Glibc)
import Glibc
#endif

// Built two ways (Scripts/fuzz):
// - with `-sanitize=fuzzer -DFUZZING`: libFuzzer's driver runs the target named by
//   $PARLEY_FUZZ_TARGET on every input it generates;
// - by a plain `swift build`: a small tool that lists targets, writes seed corpora, and replays
//   inputs (crash reproducers) through a target without the fuzzer.

/// The target chosen for this process.
let selectedTarget: FuzzTarget = {
    let name = getenv("PARLEY_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = fuzzTargets[name] else {
        printError(
            "parley-fuzz: set PARLEY_FUZZ_TARGET to one of: \(fuzzTargets.keys.sorted().joined(separator: ", "))")
        exit(2)
    }
    return target
}()

#if FUZZING
/// libFuzzer's driver (libclang_rt.fuzzer, linked by `-sanitize=fuzzer`). SwiftPM gives every
/// executable its own `main` symbol, so instead of libFuzzer's `main` this program's `main` runs
/// the driver, which parses libFuzzer's usual command line.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

@main
enum ParleyFuzzDriver {
    static func main() {
        _ = selectedTarget
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(
            runFuzzerDriver(&argc, &argv) { data, size in
                selectedTarget.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
                return 0
            })
    }
}
#else
@main
enum ParleyFuzzTool {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch arguments.first {
        case "list":
            print(fuzzTargets.keys.sorted().joined(separator: "\n"))
        case "seeds" where arguments.count == 3:
            writeSeeds(target: arguments[1], directory: arguments[2])
        case "replay" where arguments.count >= 3:
            replay(target: arguments[1], files: Array(arguments.dropFirst(2)))
        default:
            printError(
                """
                usage: parley-fuzz list
                       parley-fuzz seeds <target> <directory>   write the target's seed inputs
                       parley-fuzz replay <target> <file>...    run inputs through the target (no fuzzer)
                Fuzzing itself: Scripts/fuzz [target] [seconds]

                """)
            exit(2)
        }
    }

    static func target(_ name: String) -> FuzzTarget {
        guard let target = fuzzTargets[name] else {
            printError("parley-fuzz: no target \(name); targets: \(fuzzTargets.keys.sorted().joined(separator: ", "))")
            exit(2)
        }
        return target
    }

    static func writeSeeds(target name: String, directory: String) {
        for (index, seed) in target(name).seeds().enumerated() {
            let path = "\(directory)/seed-\(index)"
            guard let file = fopen(path, "wb") else {
                printError("parley-fuzz: cannot write \(path)")
                exit(1)
            }
            _ = fwrite(seed, 1, seed.count, file)
            fclose(file)
        }
    }

    static func replay(target name: String, files: [String]) {
        let target = target(name)
        for path in files {
            guard let file = fopen(path, "rb") else {
                printError("parley-fuzz: cannot read \(path)")
                exit(1)
            }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while case let count = fread(&chunk, 1, chunk.count, file), count > 0 { bytes += chunk[0..<count] }
            fclose(file)
            target.run(bytes)
            print("\(path): ok (\(bytes.count) bytes)")
        }
    }
}
#endif

/// Writes a line to standard error (the C `stderr` global is not concurrency-safe to touch).
func printError(_ message: String) {
    var line = message.hasSuffix("\n") ? message : message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
