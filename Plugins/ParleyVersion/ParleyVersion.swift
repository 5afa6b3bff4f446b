import PackagePlugin

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Generates `ParleyVersion.string` from the VERSION file at the package root, the one place the
/// version is written: every executable's `--version` and the Debian packages (Scripts/package)
/// read it from there. A version that is not a Debian upstream version (a digit first, then only
/// letters, digits and `.+~-`) fails the build.
@main
struct ParleyVersionPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let versionFile = context.package.directoryURL.appending(path: "VERSION")
        let output = context.pluginWorkDirectoryURL.appending(path: "ParleyVersion.swift")
        let script = """
            set -eu
            version=$(cat "$1")
            case "$version" in
                [0-9]*) ;;
                *) echo "$1: the version must start with a digit, found '$version'" >&2; exit 1 ;;
            esac
            case "$version" in
                *[!0-9A-Za-z.+~-]*) echo "$1: only letters, digits and .+~- may follow, found '$version'" >&2; exit 1 ;;
            esac
            printf '%s\\n' \
                '/// Parley'"'"'s release version, shown by every executable'"'"'s `--version` (generated from VERSION).' \
                'public enum ParleyVersion {' \
                "    public static let string = \\"$version\\"" \
                '}' >"$2"
            """
        return [
            .buildCommand(
                displayName: "Generating ParleyVersion.swift from VERSION",
                executable: URL(filePath: "/bin/sh"),
                arguments: ["-c", script, "parley-version", versionFile.path(), output.path()],
                inputFiles: [versionFile],
                outputFiles: [output]
            )
        ]
    }
}
