import LoadBalancer
import Testing

@Suite("Errors share one pattern: a code, a message, an optional cause")
struct ErrorPatternTests {
    @Test("AttemptTimeoutError: cancelled at its deadline, or ended there by the endpoint (the cause)")
    func attemptTimeout() {
        let cancelled = AttemptTimeoutError(timeout: .milliseconds(50), cause: nil)
        #expect(cancelled.code == .cancelled)
        #expect(cancelled.message == "attempt timed out after 50ms")
        #expect(cancelled.description == "attempt timed out after 50ms")
        let ended = AttemptTimeoutError(timeout: .milliseconds(50), cause: TestFailure(message: "deadline"))
        #expect(ended.code == .endedAtDeadline)
        #expect(ended.description == "attempt timed out after 50ms: deadline")
    }

    @Test("RetryError: its reason is its code, the first part of its description its message, the last error its cause")
    func retryError() throws {
        let attempt = RetryError.Attempt(number: 1, instance: nil, error: TestFailure(message: "refused"), duration: .milliseconds(2))
        let error = RetryError(reason: .attemptsExhausted, attempts: [attempt], timeout: .seconds(1))
        #expect(error.code == .attemptsExhausted)
        #expect(error.message == "all 1 attempts failed")
        #expect(error.description.hasPrefix(error.message + ": "))
        #expect((error.cause as? TestFailure)?.message == "refused")
    }

    @Test("a cause is carried, and left out of equality")
    func causes() throws {
        let plain = LoadBalancerError(code: .noEndpoints, message: "none")
        let caused = LoadBalancerError(code: .noEndpoints, message: "none", cause: TestFailure(message: "why"))
        #expect(plain == caused)
        #expect(caused.description == "noEndpoints: none (why)")
        let parse = InstanceParseError(code: .malformedValue, input: "x", message: "bad", cause: TestFailure(message: "json"))
        #expect(parse == InstanceParseError(code: .malformedValue, input: "x", message: "bad"))
        #expect((parse.cause as? TestFailure)?.message == "json")
    }
}
