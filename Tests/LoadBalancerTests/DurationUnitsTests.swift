import LoadBalancerSimulation
import Testing

@testable import LoadBalancer

/// The package's `Duration` conversions, read from the duration's 128-bit attoseconds, give what
/// `components` gives.
@Suite("Duration conversions")
struct DurationUnitsTests {
    /// The conversions by way of `components` (the definition the fast ones must match).
    static func reference(_ duration: Duration) -> (whole: Int64, nanoseconds: Double, seconds: Double) {
        let (seconds, attoseconds) = duration.components
        return (
            seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000,
            Double(seconds) * 1e9 + Double(attoseconds) / 1e9,
            Double(seconds) + Double(attoseconds) / 1e18
        )
    }

    static func check(_ duration: Duration, sourceLocation: SourceLocation = #_sourceLocation) {
        let expected = reference(duration)
        #expect(duration.wholeNanoseconds == expected.whole, "\(duration)", sourceLocation: sourceLocation)
        // The two double conversions round differently in the last bits only: within a few
        // units in the last place, or an attosecond.
        let tolerance = { (value: Double, attosecond: Double) in abs(value) * 1e-15 + attosecond }
        #expect(
            abs(duration.nanosecondsValue - expected.nanoseconds) <= tolerance(expected.nanoseconds, 1e-9),
            "\(duration): \(duration.nanosecondsValue) against \(expected.nanoseconds)", sourceLocation: sourceLocation)
        #expect(
            abs(duration.secondsValue - expected.seconds) <= tolerance(expected.seconds, 1e-18),
            "\(duration): \(duration.secondsValue) against \(expected.seconds)", sourceLocation: sourceLocation)
    }

    @Test("zero, signs, sub-nanosecond parts, the 64-bit boundaries and past the fast range")
    func edges() {
        let cases: [Duration] = [
            .zero, .nanoseconds(1), .nanoseconds(-1), .nanoseconds(999), .milliseconds(-1500), .seconds(1), .seconds(-1),
            .seconds(9.223_372_036), .seconds(-9.223_372_036), .seconds(9.223_372_037), .seconds(-9.223_372_037),
            Duration(secondsComponent: 0, attosecondsComponent: 1), Duration(secondsComponent: 0, attosecondsComponent: -1),
            Duration(secondsComponent: 0, attosecondsComponent: 999_999_999), Duration(secondsComponent: -3, attosecondsComponent: -1),
            .seconds(86_400 * 365 * 100), .seconds(-86_400 * 365 * 100), .seconds(Int64.max / 1_000_000_000),
            .seconds(Int64.max), .seconds(Int64.min), Duration(_high: 499_999_999, low: .max), Duration(_high: 500_000_000, low: 0),
            Duration(_high: -500_000_000, low: 0), Duration(_high: -500_000_001, low: .max),
        ]
        for duration in cases { Self.check(duration) }
    }

    @Test("random durations of every magnitude up to ±300 years")
    func random() {
        var generator = SplitMix64(seed: 20_261_201)
        for _ in 0..<20_000 {
            let scale = Int64(1) << Int64.random(in: 0...62, using: &generator)
            let seconds = Int64.random(in: -scale...scale, using: &generator) % (86_400 * 365 * 300)
            let attoseconds = Int64.random(in: -999_999_999_999_999_999...999_999_999_999_999_999, using: &generator)
            Self.check(
                Duration(
                    secondsComponent: seconds,
                    attosecondsComponent: seconds == 0 || (seconds > 0) == (attoseconds > 0) ? attoseconds : -attoseconds))
        }
    }
}
