import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Plain-text output helpers.
enum Output {
    /// Whether standard output is a terminal (for the live progress line).
    static var isTerminal: Bool { isatty(STDOUT_FILENO) == 1 }

    /// Writes a line to standard error.
    static func error(_ line: String) {
        var line = line
        if !line.hasSuffix("\n") { line += "\n" }
        flush()
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Writes without a newline and flushes (progress lines).
    static func write(_ text: String) {
        print(text, terminator: "")
        flush()
    }

    /// Flushes standard output.
    static func flush() {
        fflush(nil)
    }

    /// A table with left-aligned text columns and right-aligned numeric ones.
    static func table(_ header: [String], _ rows: [[String]], rightAligned: Set<Int> = []) -> String {
        let widths = header.indices.map { column in
            ([header[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return rightAligned.contains(column) ? pad + cell : cell + pad
            }.joined(separator: "  ").trailingSpacesTrimmed
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    /// Milliseconds with one decimal (`12.3 ms`).
    static func milliseconds(_ nanoseconds: Double) -> String {
        let ms = nanoseconds / 1e6
        return ms >= 100 ? "\(Int(ms.rounded())) ms" : "\((ms * 10).rounded() / 10) ms"
    }

    static func percent(_ value: Double) -> String {
        "\((value * 1000).rounded() / 10)%"
    }
}

extension String {
    var trailingSpacesTrimmed: String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
