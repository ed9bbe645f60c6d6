/// The package's one conversion of `Duration` to plain numbers, for the modules that do not
/// depend on SwiftNIO (those that do use NIO's `TimeAmount(_:)` and `Duration(_:)`).
///
/// Read from the duration's 128-bit count of attoseconds (`_high`, `_low`: the stored fields of
/// the frozen `Duration`) rather than through `components`, which divides by 10¹⁸ in 128-bit
/// arithmetic out of line: on a P2C call, which converts two durations, that division was most
/// of the conversions' cost.
extension Duration {
    /// The magnitude of the attoseconds, as its high and low 64 bits, and whether it is negative.
    @inline(__always)
    private var attosecondMagnitude: (high: UInt64, low: UInt64, negative: Bool) {
        guard _high < 0 else { return (UInt64(_high), _low, false) }
        // Two's complement negation of the 128-bit value.
        let low = ~_low &+ 1
        let high = ~UInt64(bitPattern: _high) &+ (low == 0 ? 1 : 0)
        return (high, low, true)
    }

    /// Whole nanoseconds, truncated toward zero (wrapping beyond Int64's ±292 years).
    package var wholeNanoseconds: Int64 {
        let (high, low, negative) = attosecondMagnitude
        // Below 5 × 10⁸ × 2⁶⁴ attoseconds (about 292 years) the quotient fits an Int64: one
        // 128-by-64-bit division.
        guard high < 500_000_000 else {
            let (seconds, attoseconds) = components
            return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
        }
        let magnitude = Int64(UInt64(1_000_000_000).dividingFullWidth((high, low)).quotient)
        return negative ? -magnitude : magnitude
    }

    /// Nanoseconds, fractions kept.
    package var nanosecondsValue: Double {
        let (high, low, negative) = attosecondMagnitude
        let magnitude = (Double(high) * 0x1p64 + Double(low)) / 1e9
        return negative ? -magnitude : magnitude
    }

    /// Seconds, fractions kept.
    package var secondsValue: Double {
        let (high, low, negative) = attosecondMagnitude
        let magnitude = (Double(high) * 0x1p64 + Double(low)) / 1e18
        return negative ? -magnitude : magnitude
    }
}
