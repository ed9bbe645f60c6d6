/// The package's one conversion of `Duration` to plain numbers, for the modules that do not
/// depend on SwiftNIO (those that do use NIO's `TimeAmount(_:)` and `Duration(_:)`).
extension Duration {
    /// Whole nanoseconds (wrapping beyond Int64's ±292 years).
    package var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }

    /// Nanoseconds, fractions kept.
    ///
    /// From the attoseconds' two words, without `components` (two 128-bit divisions, a few tens of
    /// nanoseconds: P2C converts two durations per call).
    @inlinable
    package var nanosecondsValue: Double { attosecondsValue * 1e-9 }

    /// Seconds, fractions kept.
    @inlinable
    package var secondsValue: Double { attosecondsValue * 1e-18 }

    /// The attoseconds as a `Double` (rounded to 53 bits).
    @inlinable
    package var attosecondsValue: Double {
        let attoseconds = self.attoseconds
        let high = Int64(truncatingIfNeeded: attoseconds >> 64)
        let low = UInt64(truncatingIfNeeded: attoseconds)
        return Double(high) * 0x1p64 + Double(low)
    }
}
