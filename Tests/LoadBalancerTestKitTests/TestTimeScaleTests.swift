import LoadBalancerTestKit
import Testing

@Suite("TestTimeScale")
struct TestTimeScaleTests {
    @Test(
        "LB_TEST_TIME_SCALE: a finite number of at least 1 is the factor; anything else is 1",
        arguments: [
            (nil, 1.0), ("5", 5.0), ("2.5", 2.5), ("1", 1.0), ("0.5", 1.0), ("0", 1.0), ("-3", 1.0),
            ("inf", 1.0), ("nan", 1.0), ("fast", 1.0), ("", 1.0),
        ] as [(String?, Double)]
    )
    func factorFromTheEnvironmentValue(value: String?, expected: Double) {
        #expect(TestTimeScale.factor(from: value) == expected)
    }

    @Test("a duration stretches by the factor; whole minutes round up")
    func scales() {
        #expect(TestTimeScale.scaled(.milliseconds(100), by: 5) == .milliseconds(500))
        #expect(TestTimeScale.scaled(.seconds(2), by: 1) == .seconds(2))
        #expect(TestTimeScale.scaled(.milliseconds(2500), by: 3) == .milliseconds(7500))
        #expect(TestTimeScale.scaled(minutes: 3, by: 5) == 15)
        #expect(TestTimeScale.scaled(minutes: 3, by: 2.5) == 8)
        #expect(TestTimeScale.scaled(minutes: 2, by: 1) == 2)
    }

    @Test("the factor is at least 1: a bound is never shortened")
    func neverShortens() {
        #expect(TestTimeScale.factor >= 1)
        #expect(TestTimeScale.scaled(.milliseconds(100)) >= .milliseconds(100))
        #expect(TestTimeScale.scaled(minutes: 3) >= 3)
    }
}
