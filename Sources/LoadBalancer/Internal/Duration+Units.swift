/// The package's one conversion of `Duration` to plain numbers, for the modules that do not
/// depend on SwiftNIO (those that do use NIO's `TimeAmount(_:)` and `Duration(_:)`).
extension Duration {
    /// Whole nanoseconds (wrapping beyond Int64's ±292 years).
    package var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }

    /// Nanoseconds, fractions kept.
    package var nanosecondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1e9 + Double(attoseconds) / 1e9
    }

    /// Seconds, fractions kept.
    package var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
