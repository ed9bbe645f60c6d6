/// Durations as Consul reads them (Go's `time.ParseDuration`): a sequence of decimal numbers, each
/// with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `"10s"`, `"1500ms"`, `"1m30s"`.
enum GoDuration {
    /// The duration, or `nil` when `text` is not one.
    static func parse(_ text: String) -> Duration? {
        if text == "0" { return .zero }
        var scalars = Substring(text).unicodeScalars[...]
        guard !scalars.isEmpty else { return nil }
        var total: Double = 0
        while !scalars.isEmpty {
            var number = ""
            while let first = scalars.first, ("0"..."9").contains(first) || first == "." {
                number.unicodeScalars.append(first)
                scalars.removeFirst()
            }
            guard let value = Double(number) else { return nil }
            var unit = ""
            while let first = scalars.first, !("0"..."9").contains(first), first != "." {
                unit.unicodeScalars.append(first)
                scalars.removeFirst()
            }
            let scale: Double
            switch unit {
            case "ns": scale = 1e-9
            case "us", "µs": scale = 1e-6
            case "ms": scale = 1e-3
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            default: return nil
            }
            total += value * scale
        }
        return .nanoseconds(Int64(total * 1e9))
    }
}
