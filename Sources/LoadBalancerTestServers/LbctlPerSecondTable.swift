/// The per-second table of an `lbctl bench` report (`--per-second`, or `--slow-start`), parsed:
///
/// ```
/// SECOND  ATTEMPTS  127.0.0.1:40001  127.0.0.1:40002
/// 0-1          200            50.0%            50.0%
/// 1-1.4         80            50.0%            50.0%
/// ```
public struct PerSecondTable: Equatable, Sendable {
    /// One second of the run.
    public struct Row: Equatable, Sendable {
        /// The second's start, in whole seconds into the run.
        public var from: Int
        /// Its end (the last row's may be a fraction: the run ended within it).
        public var to: Double
        /// Attempts made in it.
        public var attempts: Int
        /// Per instance, its share of the attempts in `0...1`; `nil` before its first attempt.
        public var shares: [String: Double?]

        /// Whether the row covers a whole second.
        public var isWhole: Bool { to - Double(from) >= 1 }
    }

    /// The instances, in the order of their first attempt.
    public var ids: [String]
    public var rows: [Row]

    /// Parses the table out of a whole report; `nil` when there is none.
    public init?(_ output: String) {
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
        guard let headerIndex = lines.firstIndex(where: { $0.hasPrefix("SECOND ") && $0.contains(" ATTEMPTS") }) else { return nil }
        let header = lines[headerIndex].split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        ids = Array(header.dropFirst(2))
        rows = []
        for line in lines[(headerIndex + 1)...] {
            let cells = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard cells.count == header.count else { break }
            let bounds = cells[0].split(separator: "-")
            guard bounds.count == 2, let from = Int(bounds[0]), let to = Double(bounds[1]), let attempts = Int(cells[1]) else { return nil }
            var shares: [String: Double?] = [:]
            for (id, cell) in zip(ids, cells.dropFirst(2)) {
                if cell == "-" {
                    shares[id] = .some(nil)
                } else {
                    guard cell.hasSuffix("%"), let percent = Double(cell.dropLast()) else { return nil }
                    shares[id] = percent / 100
                }
            }
            rows.append(Row(from: from, to: to, attempts: attempts, shares: shares))
        }
    }

    /// The share of `id` in `row` (0 before its first attempt or when it is not in the table).
    public func share(_ id: String, in row: Row) -> Double {
        (row.shares[id] ?? nil) ?? 0
    }

}
