// What the runners' command lines share: flags that each take one value, usage errors that exit
// with status 2, and the balancer names the runners accept.
import Foundation

/// A runner's command line, read one flag and its value at a time.
public struct FlagReader {
    /// The runner's name, at the start of each error.
    public let program: String
    /// The usage text, printed with `--help` and after each error.
    public let usage: String
    private var arguments: ArraySlice<String>

    public init(program: String, usage: String, arguments: [String] = Array(CommandLine.arguments.dropFirst())) {
        self.program = program
        self.usage = usage
        self.arguments = arguments[...]
    }

    /// The next flag and its value, or `nil` when none is left; `--help` (or `-h`) prints the
    /// usage and exits, a flag without a value is a usage error.
    public mutating func next() -> (flag: String, value: String)? {
        guard let flag = arguments.popFirst() else { return nil }
        if flag == "--help" || flag == "-h" {
            print(usage)
            exit(0)
        }
        guard let value = arguments.popFirst() else { fail("missing value for \(flag)") }
        return (flag, value)
    }

    /// Prints `message` and the usage to stderr, and exits with status 2.
    public func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("\(program): \(message)\n\(usage)\n".utf8))
        exit(2)
    }

    /// `value` as a positive number, or a usage error naming `flag`.
    public func positive<T: LosslessStringConvertible & Comparable & Numeric>(_ value: String, _ flag: String) -> T {
        guard let number = T(value), number > 0 else { fail("\(flag) needs a positive number, not '\(value)'") }
        return number
    }

    /// `value` as a comma-separated list of positive numbers.
    public func positives<T: LosslessStringConvertible & Comparable & Numeric>(_ value: String, _ flag: String) -> [T] {
        value.split(separator: ",").map { positive(String($0), flag) }
    }

    /// `value` as balancer names (`all` for `known`), each one of `known` or `extra`.
    public func balancers(_ value: String, known: [String], extra: [String] = []) -> [String] {
        let names = value == "all" ? known : value.split(separator: ",").map(String.init)
        if let unknown = names.first(where: { !known.contains($0) && !extra.contains($0) }) {
            fail("unknown balancer '\(unknown)' (one of \((known + extra).joined(separator: ", ")), or all)")
        }
        return names
    }
}

/// Every built-in balancer, by the names the runners take.
public let allBalancerNames = [
    "round-robin", "random", "weighted-round-robin", "weighted-random", "priority",
    "p2c-least-outstanding", "p2c-peak-ewma", "consistent-hash",
]
