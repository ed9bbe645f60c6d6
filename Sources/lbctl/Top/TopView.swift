import Foundation
import LoadBalancer

/// What `lbctl top` prints per interval: a refreshing coloured table on a terminal, plain lines
/// into a pipe or file, or one JSON object per line.
struct TopView {
    enum Mode: Equatable {
        case table
        case plain
        case json
    }

    /// What the load did to one instance in the interval.
    struct Load {
        var attempts = 0
        var failures = 0
        var latency: Duration = .zero

        var mean: Duration? { attempts == 0 ? nil : latency / attempts }
    }

    var mode: Mode
    var source: String
    var label: String
    var sort: TopCommand.Sort
    var explain: Bool
    /// When the view started (for the frames' times).
    let start = ContinuousClock.now
    /// The explanations shown under the table (the newest few).
    private var recent: [PickExplanation] = []

    init(mode: Mode, source: String, label: String, sort: TopCommand.Sort, explain: Bool) {
        self.mode = mode
        self.source = source
        self.label = label
        self.sort = sort
        self.explain = explain
    }

    /// Written once before the first table: hide the cursor, clear the screen.
    static let enter = "\u{1B}[?25l\u{1B}[H\u{1B}[2J"
    /// Written once after the last table: show the cursor again, below the table.
    static let leave = "\u{1B}[?25h\n"

    /// The load per instance between two readings of the run's counters.
    static func loadDelta(_ now: [String: LoadRun.Stats.PerInstance], _ before: [String: LoadRun.Stats.PerInstance]) -> [String: Load] {
        var load: [String: Load] = [:]
        for (id, counts) in now {
            let old = before[id] ?? LoadRun.Stats.PerInstance()
            load[id] = Load(
                attempts: counts.attempts - old.attempts, failures: counts.failures - old.failures, latency: counts.latency - old.latency)
        }
        return load
    }

    /// One interval's output.
    mutating func frame(_ state: BalancerState, load: [String: Load], explanations: [PickExplanation]) -> String {
        let rows = sorted(state, load: load)
        let slow = slowIDs(state, load: load)
        switch mode {
        case .json:
            return json(state, rows: rows, load: load, slow: slow, explanations: explanations) + "\n"
        case .plain:
            var lines = [header(state, load: load).joined(separator: "  ")]
            for instance in rows {
                let cells = cells(instance, state: state, load: load[instance.id] ?? Load(), slow: slow.contains(instance.id))
                // key=value, a value with spaces in quotes.
                lines.append(
                    "  "
                        + zip(Self.columns, cells).map { "\($0.lowercased())=\($1.contains(" ") ? "\"\($1)\"" : $1)" }.joined(
                            separator: " "))
            }
            if explain { lines += explanations.suffix(5).map { "  explain: \($0)" } }
            return lines.joined(separator: "\n") + "\n"
        case .table:
            if explain {
                recent = Array((recent + explanations).suffix(8))
            }
            let table = Output.table(
                Self.columns,
                rows.map { cells($0, state: state, load: load[$0.id] ?? Load(), slow: slow.contains($0.id)) },
                rightAligned: [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]
            ).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            var screen = header(state, load: load)
            screen.append("")
            screen.append("\u{1B}[7m" + table[0] + "\u{1B}[0m")
            for (instance, line) in zip(rows, table.dropFirst()) {
                let colour = colour(instance, slow: slow.contains(instance.id))
                screen.append(colour.map { "\u{1B}[\($0)m" + line + "\u{1B}[0m" } ?? line)
            }
            if explain {
                screen.append("")
                screen.append("why (one pick in each sample):")
                screen += recent.isEmpty ? ["  (no pick explained yet)"] : recent.map { "  \($0)" }
            }
            screen.append("")
            screen.append("q: quit")
            // Home, then each line cleared to its end, then everything below cleared.
            return "\u{1B}[H" + screen.map { $0 + "\u{1B}[K" }.joined(separator: "\n") + "\u{1B}[J"
        }
    }

    static let columns = ["INSTANCE", "SHARE", "PICK/S", "REQ/S", "ERR", "MEAN", "EWMA", "INFL", "SUCC", "PRIO", "ZONE", "RAMP", "STATE"]

    private func header(_ state: BalancerState, load: [String: Load]) -> [String] {
        let seconds = max(state.interval.secondsValue, 1e-9)
        let attempts = load.values.reduce(0) { $0 + $1.attempts }
        let failures = load.values.reduce(0) { $0 + $1.failures }
        let latency = load.values.reduce(Duration.zero) { $0 + $1.latency }
        let failing = state.instances.count { $0.health == .failing }
        var first = "lbctl top  \(label)  \(source)  t=\(Self.number((ContinuousClock.now - start).secondsValue, digits: 1)) s"
        first += "  generation \(state.generation)"
        var second = "instances \(state.instances.count) (\(state.ejected) ejected, \(failing) failing checks, \(state.unusable) out)"
        second += "  picks \(Self.number(Double(state.picks) / seconds, digits: 0))/s"
        second += "  requests \(Self.number(Double(attempts) / seconds, digits: 0))/s"
        if attempts > 0 {
            second += "  success \(Output.percent(Double(attempts - failures) / Double(attempts)))"
            second += "  mean \(Output.milliseconds((latency / attempts).nanosecondsValue))"
        }
        if let inFlight = state.inFlight { second += "  in flight \(inFlight)" }
        second += "  panic \(state.panic ? "YES" : "no")"
        var lines = [first, second]
        if !state.levels.isEmpty {
            lines.append(
                "levels: "
                    + state.levels.map {
                        "priority \($0.priority) \($0.share)% (\($0.healthy)/\($0.total) healthy\($0.panic ? ", panic" : ""))"
                    }
                    .joined(separator: ", "))
        }
        if !state.zoneShares.isEmpty {
            lines.append(
                "zones: "
                    + state.zoneShares.sorted { $0.key < $1.key }.map {
                        "\($0.key.isEmpty ? "(none)" : $0.key) \(Output.percent($0.value))"
                    }.joined(separator: ", "))
        }
        return lines
    }

    private func cells(_ instance: InstanceState, state: BalancerState, load: Load, slow: Bool) -> [String] {
        let seconds = max(state.interval.secondsValue, 1e-9)
        return [
            instance.id,
            Output.percent(instance.share),
            Self.number(Double(instance.picks) / seconds, digits: 0),
            Self.number(Double(load.attempts) / seconds, digits: 0),
            load.attempts == 0 ? "-" : Output.percent(Double(load.failures) / Double(load.attempts)),
            load.mean.map { Output.milliseconds($0.nanosecondsValue) } ?? "-",
            instance.latencyEstimate.map { Output.milliseconds($0.nanosecondsValue) } ?? "-",
            instance.inFlight.map(String.init) ?? "-",
            instance.successRate.map { Output.percent($0) } ?? "-",
            String(instance.priority),
            instance.zone ?? "-",
            instance.slowStartFactor < 1 ? Output.percent(instance.slowStartFactor) : "-",
            Self.stateText(instance, slow: slow),
        ]
    }

    static func stateText(_ instance: InstanceState, slow: Bool) -> String {
        var words: [String] = []
        if let ejection = instance.ejection {
            words.append("ejected (\(reason(ejection.reason)), \(number(ejection.remaining.secondsValue, digits: 1)) s left)")
        }
        if instance.health == .failing { words.append("failing check") }
        if instance.probation { words.append("probation") }
        if !instance.usable && instance.ejection == nil && instance.health != .failing { words.append("out") }
        if slow { words.append("slow") }
        return words.isEmpty ? "ok" : words.joined(separator: ", ")
    }

    static func reason(_ reason: OutlierDetector.Reason) -> String {
        switch reason {
        case .consecutiveFailures: "consecutive failures"
        case .failureRate: "failure rate"
        case .failedProbe: "failed probe"
        }
    }

    /// The ANSI colour of a row: red ejected, yellow unhealthy, magenta slow.
    private func colour(_ instance: InstanceState, slow: Bool) -> Int? {
        if instance.ejection != nil { return 31 }
        if instance.health == .failing || instance.probation || (instance.successRate ?? 1) < 0.95 { return 33 }
        if slow { return 35 }
        return nil
    }

    /// The instances whose mean latency in the interval (or else latency estimate) is at least
    /// twice the median of all instances that have one (and at least 1 ms more).
    private func slowIDs(_ state: BalancerState, load: [String: Load]) -> Set<String> {
        let latencies = state.instances.compactMap { instance -> (String, Double)? in
            if let mean = load[instance.id]?.mean { return (instance.id, mean.nanosecondsValue) }
            return instance.latencyEstimate.map { (instance.id, $0.nanosecondsValue) }
        }
        guard latencies.count >= 2 else { return [] }
        let sorted = latencies.map(\.1).sorted()
        let median = sorted[sorted.count / 2 - (sorted.count % 2 == 0 ? 1 : 0)]
        return Set(latencies.filter { $0.1 >= 2 * median && $0.1 - median >= 1e6 }.map(\.0))
    }

    private func sorted(_ state: BalancerState, load: [String: Load]) -> [InstanceState] {
        state.instances.sorted { a, b in
            switch sort {
            case .id: return a.id < b.id
            case .share: return a.picks != b.picks ? a.picks > b.picks : a.id < b.id
            case .latency:
                let x = load[a.id]?.mean ?? a.latencyEstimate ?? .zero
                let y = load[b.id]?.mean ?? b.latencyEstimate ?? .zero
                return x != y ? x > y : a.id < b.id
            case .inflight:
                let x = a.inFlight ?? 0
                let y = b.inFlight ?? 0
                return x != y ? x > y : a.id < b.id
            }
        }
    }

    // MARK: JSON

    struct Frame: Encodable {
        var time: Double
        var balancer: String
        var label: String
        var generation: UInt32
        var interval: Double
        var picks: UInt64
        var requests: Int
        var failures: Int
        var panic: Bool
        var healthChecked: Bool
        var levels: [Level]
        var zoneShares: [String: Double]
        var instances: [Row]
        var explanations: [String]?
    }

    struct Level: Encodable {
        var priority: Int
        var share: Int
        var panic: Bool
        var healthy: Int
        var total: Int
    }

    struct Row: Encodable {
        var id: String
        var picks: UInt64
        var share: Double
        var requests: Int
        var failures: Int
        var meanLatencyMs: Double?
        var latencyEstimateMs: Double?
        var inFlight: Int?
        var successRate: Double?
        var usable: Bool
        var ejected: Ejected?
        var probation: Bool
        var health: String
        var priority: Int
        var zone: String?
        var slowStartFactor: Double
        var slow: Bool
        var state: String
    }

    struct Ejected: Encodable {
        var reason: String
        var remainingSeconds: Double
        var count: Int
    }

    private func json(
        _ state: BalancerState, rows: [InstanceState], load: [String: Load], slow: Set<String>, explanations: [PickExplanation]
    ) -> String {
        let frame = Frame(
            time: (ContinuousClock.now - start).secondsValue,
            balancer: state.balancer,
            label: label,
            generation: state.generation,
            interval: state.interval.secondsValue,
            picks: state.picks,
            requests: load.values.reduce(0) { $0 + $1.attempts },
            failures: load.values.reduce(0) { $0 + $1.failures },
            panic: state.panic,
            healthChecked: state.healthChecked,
            levels: state.levels.map {
                Level(priority: $0.priority, share: $0.share, panic: $0.panic, healthy: $0.healthy, total: $0.total)
            },
            zoneShares: state.zoneShares,
            instances: rows.map { instance in
                let counts = load[instance.id] ?? Load()
                return Row(
                    id: instance.id,
                    picks: instance.picks,
                    share: instance.share,
                    requests: counts.attempts,
                    failures: counts.failures,
                    meanLatencyMs: counts.mean.map { $0.nanosecondsValue / 1e6 },
                    latencyEstimateMs: instance.latencyEstimate.map { $0.nanosecondsValue / 1e6 },
                    inFlight: instance.inFlight,
                    successRate: instance.successRate,
                    usable: instance.usable,
                    ejected: instance.ejection.map {
                        Ejected(reason: Self.reason($0.reason), remainingSeconds: $0.remaining.secondsValue, count: $0.count)
                    },
                    probation: instance.probation,
                    health: "\(instance.health)",
                    priority: instance.priority,
                    zone: instance.zone,
                    slowStartFactor: instance.slowStartFactor,
                    slow: slow.contains(instance.id),
                    state: Self.stateText(instance, slow: slow.contains(instance.id))
                )
            },
            explanations: explain ? explanations.map(\.description) : nil
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(frame)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func number(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return "-" }
        return String(format: "%.\(digits)f", value)
    }
}
