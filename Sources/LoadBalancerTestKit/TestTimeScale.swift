#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// How much longer a test's time bounds are on this run.
///
/// A test that waits for something to happen, or holds a call to a time limit, picks its bound for
/// a normal build on an ordinary machine. Under ThreadSanitizer or AddressSanitizer the same code
/// runs several times slower, and a bound that is generous in a normal run is missed without
/// anything being wrong. Set `LB_TEST_TIME_SCALE` to a number above 1 for such a run (this
/// package's `scripts/sanitizers.sh` sets 5 under ThreadSanitizer and 3 under AddressSanitizer), and
/// write bounds as `TestTimeScale.scaled(.seconds(2))`: what the test asserts stays the same (that
/// the event happens, that the call returns, and soon), only "soon" stretches.
///
/// The waits of this kit (``pollUntil(_:timeout:interval:seen:onTimeout:_:)``,
/// ``ManualClock/waitForSleepers(count:timeout:)``,
/// ``ManualPublisher/waitForSubscribers(count:timeout:)``) scale their timeouts by it.
public enum TestTimeScale {
    /// The factor from `LB_TEST_TIME_SCALE`, or 1 when it is unset. A value that is not a finite
    /// number of at least 1 is ignored (the factor is then 1), so a typo cannot shorten a bound.
    public static let factor: Double = factor(from: ProcessInfo.processInfo.environment["LB_TEST_TIME_SCALE"])

    /// The factor a value of `LB_TEST_TIME_SCALE` gives: the number, when it is a finite number of
    /// at least 1; 1 otherwise.
    public static func factor(from value: String?) -> Double {
        guard let value, let number = Double(value), number.isFinite, number >= 1 else { return 1 }
        return number
    }

    /// `duration` stretched by `factor` (by default ``factor``, the run's).
    public static func scaled(_ duration: Duration, by factor: Double = factor) -> Duration {
        factor == 1 ? duration : duration * factor
    }

    /// A suite's time limit in whole minutes, for `.timeLimit(.minutes(_:))`: 5, stretched by the
    /// run's ``factor``. Suites run in parallel on few cores, so a test's wall time is mostly its
    /// wait for them (over two minutes for some on a busy two-core host): the limit is there to
    /// catch a hang, not to time a test.
    public static var suiteLimitMinutes: Int { scaled(minutes: 5) }

    /// `minutes` stretched by `factor` (by default ``factor``, the run's) and rounded up, for a
    /// suite's or a test's `.timeLimit(.minutes(_:))` trait, which takes whole minutes.
    public static func scaled(minutes: Int, by factor: Double = factor) -> Int {
        Int((Double(minutes) * factor).rounded(.up))
    }
}
