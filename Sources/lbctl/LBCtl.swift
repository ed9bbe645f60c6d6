import ArgumentParser
import Foundation

/// `lbctl`: resolve sources, drive load through balancers, and compare them.
struct LBCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lbctl",
        abstract: "Client-side load balancing and service discovery, from the command line.",
        discussion: SourceSpec.help,
        subcommands: [ResolveCommand.self, BenchCommand.self, TopCommand.self, DemoCommand.self, ReplayCommand.self]
    )
}

@main
enum Main {
    static func main() async {
        do {
            var command = try LBCtl.parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as LbctlError {
            Output.error("lbctl: \(error)")
            LBCtl.exit(withError: ExitCode(error.exitStatus))
        } catch {
            let code = LBCtl.exitCode(for: error)
            if code == .success || error is CleanExit {
                LBCtl.exit(withError: error)
            }
            if code == .validationFailure {
                // A malformed argument: one line, exit status 2.
                let message = LBCtl.message(for: error)
                    .split(separator: "\n")
                    .map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { !$0.isEmpty }
                    .joined(separator: " ")
                Output.error("lbctl: \(message)")
                LBCtl.exit(withError: ExitCode(2))
            }
            Output.error("lbctl: \(error)")
            LBCtl.exit(withError: ExitCode(1))
        }
    }
}
