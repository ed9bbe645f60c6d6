import Foundation
import LoadBalancer
import LoadBalancerSimulation

/// The chart `--chart FILE.svg` writes: the latency CDF of each balancer (log-scale latency), then
/// for each of some balancers each instance's share of the requests over time (stacked).
///
/// The SVG is written by hand. Its series carry their data for tools and tests: each CDF line is
/// a `g.cdf-series` with `data-name` and `data-latencies-ms` (the latency, in milliseconds, at
/// each of its panel's `data-probabilities`); each share panel a `g.share-panel` with `data-name`,
/// `data-bucket-starts` and `data-bucket-end` (seconds), holding a `path.share-area` per instance
/// with `data-instance` and `data-requests` (its requests in each bucket).
struct SVGChart {
    struct CDFSeries {
        var name: String
        /// Latency in seconds at each of the chart's probabilities (empty: no successful request).
        var latencies: [Double]
    }

    struct SharePanel {
        var name: String
        var instances: [String]
        /// Each bucket's start, in seconds into the run; the last ends at `end`.
        var starts: [Double]
        var end: Double
        /// Requests per bucket, per instance.
        var requests: [[Int]]
    }

    var title: String
    var subtitle: String
    var probabilities: [Double] = LatencyQuantile.probabilities
    var cdf: [CDFSeries]
    var panels: [SharePanel]

    // Layout.
    private static let width = 960.0
    private static let plotLeft = 80.0
    private static let plotRight = 700.0
    private static let legendLeft = 730.0
    private static let cdfHeight = 320.0
    private static let shareHeight = 170.0
    /// Tableau 10.
    static let palette = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
    ]

    /// Writes the chart to `path`.
    func write(to path: String) throws(LbctlError) {
        do {
            try Data(svg().utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw LbctlError.run("--chart: cannot write \(path): \(Recording.reason(error))", cause: error)
        }
    }

    /// The SVG document.
    func svg() -> String {
        var body: [String] = []
        var y = 0.0
        body.append(text(Self.plotLeft - 60, 30, title, size: 18, weight: "bold"))
        body.append(text(Self.plotLeft - 60, 50, subtitle, size: 12, fill: "#555"))
        y = 80
        body.append(contentsOf: cdfPanel(top: y))
        y += Self.cdfHeight + 90
        for (index, panel) in panels.enumerated() {
            body.append(contentsOf: sharePanel(panel, index: index, top: y))
            y += Self.shareHeight + 80
        }
        let height = y
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" width="\(f(Self.width))" height="\(f(height))" viewBox="0 0 \(f(Self.width)) \(f(height))" font-family="Helvetica, Arial, sans-serif">
            <rect class="background" x="0" y="0" width="\(f(Self.width))" height="\(f(height))" fill="#ffffff"/>
            \(body.joined(separator: "\n"))
            </svg>

            """
    }

    // MARK: The CDF

    private func cdfPanel(top: Double) -> [String] {
        var out: [String] = []
        let plotTop = top + 20
        let plotBottom = plotTop + Self.cdfHeight
        out.append(
            text(
                Self.plotLeft, top + 8, "Latency of successful requests: cumulative share (latency on a log scale)", size: 14,
                weight: "bold"))
        let values = cdf.flatMap(\.latencies).filter { $0 > 0 }
        let (lo, hi) = Self.logRange(min: values.min() ?? 1e-3, max: values.max() ?? 1)
        func x(_ seconds: Double) -> Double {
            let clamped = Swift.min(hi, Swift.max(lo, seconds))
            return Self.plotLeft + (log10(clamped) - log10(lo)) / (log10(hi) - log10(lo)) * (Self.plotRight - Self.plotLeft)
        }
        func y(_ share: Double) -> Double { plotBottom - share * (plotBottom - plotTop) }
        out.append(
            "<g class=\"cdf-panel\" data-probabilities=\"\(probabilities.map { "\($0)" }.joined(separator: " "))\">")
        // Grid and axes.
        for share in [0, 0.25, 0.5, 0.75, 0.9, 1] {
            let major = [0, 0.5, 1].contains(share)
            out.append(line(Self.plotLeft, y(share), Self.plotRight, y(share), stroke: major ? "#cccccc" : "#eeeeee"))
            out.append(text(Self.plotLeft - 8, y(share) + 4, Self.percentLabel(share), size: 11, anchor: "end", fill: "#444"))
        }
        for tick in Self.logTicks(lo, hi) {
            let major = Self.isPowerOfTen(tick)
            out.append(line(x(tick), plotTop, x(tick), plotBottom, stroke: major ? "#cccccc" : "#eeeeee"))
            out.append(text(x(tick), plotBottom + 16, Self.latencyLabel(tick), size: 11, anchor: "middle", fill: "#444"))
        }
        out.append(line(Self.plotLeft, plotBottom, Self.plotRight, plotBottom, stroke: "#333333"))
        out.append(line(Self.plotLeft, plotTop, Self.plotLeft, plotBottom, stroke: "#333333"))
        out.append(text((Self.plotLeft + Self.plotRight) / 2, plotBottom + 36, "latency (log scale)", size: 12, anchor: "middle"))
        out.append(
            "<text x=\"\(f(Self.plotLeft - 50))\" y=\"\(f((plotTop + plotBottom) / 2))\" font-size=\"12\" text-anchor=\"middle\" "
                + "transform=\"rotate(-90 \(f(Self.plotLeft - 50)) \(f((plotTop + plotBottom) / 2)))\">share of requests at or below</text>"
        )
        // The series, and the legend.
        let styles = Self.styles(cdf.map(\.name))
        for (index, series) in cdf.enumerated() {
            let style = styles[index]
            let points = zip(series.latencies, probabilities).map { "\(f(x($0))),\(f(y($1)))" }
            let dash = style.dashed ? " stroke-dasharray=\"6 3\"" : ""
            out.append(
                "<g class=\"cdf-series\" data-name=\"\(escape(series.name))\" data-latencies-ms=\"\(series.latencies.map { String(format: "%.4f", $0 * 1000) }.joined(separator: " "))\">"
            )
            if !points.isEmpty {
                out.append(
                    "<polyline points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"\(style.color)\" stroke-width=\"1.8\"\(dash)/>"
                )
            }
            out.append("</g>")
            let legendY = plotTop + 6 + Double(index) * 18
            out.append(
                "<line x1=\"\(f(Self.legendLeft))\" y1=\"\(f(legendY))\" x2=\"\(f(Self.legendLeft + 24))\" y2=\"\(f(legendY))\" stroke=\"\(style.color)\" stroke-width=\"2.5\"\(dash)/>"
            )
            out.append(text(Self.legendLeft + 30, legendY + 4, series.name, size: 11))
        }
        out.append("</g>")
        return out
    }

    // MARK: Shares over time

    private func sharePanel(_ panel: SharePanel, index: Int, top: Double) -> [String] {
        var out: [String] = []
        let plotTop = top + 20
        let plotBottom = plotTop + Self.shareHeight
        out.append(text(Self.plotLeft, top + 8, "\(panel.name): each instance's share of the requests over time", size: 14, weight: "bold"))
        let start = panel.starts.first ?? 0
        let end = Swift.max(panel.end, start + 1e-3)
        func x(_ seconds: Double) -> Double { Self.plotLeft + (seconds - start) / (end - start) * (Self.plotRight - Self.plotLeft) }
        func y(_ share: Double) -> Double { plotBottom - share * (plotBottom - plotTop) }
        out.append(
            "<g class=\"share-panel\" data-name=\"\(escape(panel.name))\" data-bucket-starts=\"\(panel.starts.map { String(format: "%.3f", $0) }.joined(separator: " "))\" data-bucket-end=\"\(String(format: "%.3f", panel.end))\">"
        )
        let ends = Array(panel.starts.dropFirst()) + [panel.end]
        let totals = panel.requests.map { $0.reduce(0, +) }
        var below = [Double](repeating: 0, count: panel.starts.count)
        for (instance, name) in panel.instances.enumerated() {
            let color = Self.palette[instance % Self.palette.count]
            let counts = panel.requests.map { instance < $0.count ? $0[instance] : 0 }
            let above = below.indices.map { b in below[b] + (totals[b] == 0 ? 0 : Double(counts[b]) / Double(totals[b])) }
            // The band between `below` and `above`, a step per bucket.
            var path = ""
            for b in panel.starts.indices {
                path += (b == 0 ? "M" : "L") + "\(f(x(panel.starts[b]))),\(f(y(above[b]))) L\(f(x(ends[b]))),\(f(y(above[b]))) "
            }
            for b in panel.starts.indices.reversed() {
                path += "L\(f(x(ends[b]))),\(f(y(below[b]))) L\(f(x(panel.starts[b]))),\(f(y(below[b]))) "
            }
            path += "Z"
            out.append(
                "<path class=\"share-area\" data-instance=\"\(escape(name))\" data-requests=\"\(counts.map(String.init).joined(separator: " "))\" d=\"\(path)\" fill=\"\(color)\" fill-opacity=\"0.85\" stroke=\"#ffffff\" stroke-width=\"0.5\"/>"
            )
            below = above
        }
        for share in [0, 0.25, 0.5, 0.75, 1] {
            out.append(
                line(Self.plotLeft, y(share), Self.plotRight, y(share), stroke: "#ffffff", opacity: share == 0 || share == 1 ? 0 : 0.6))
            out.append(text(Self.plotLeft - 8, y(share) + 4, Self.percentLabel(share), size: 11, anchor: "end", fill: "#444"))
        }
        for tick in Self.linearTicks(start, end) {
            out.append(line(x(tick), plotBottom, x(tick), plotBottom + 4, stroke: "#333333"))
            out.append(text(x(tick), plotBottom + 16, Self.secondsLabel(tick), size: 11, anchor: "middle", fill: "#444"))
        }
        out.append(line(Self.plotLeft, plotBottom, Self.plotRight, plotBottom, stroke: "#333333"))
        out.append(line(Self.plotLeft, plotTop, Self.plotLeft, plotBottom, stroke: "#333333"))
        out.append(text((Self.plotLeft + Self.plotRight) / 2, plotBottom + 34, "seconds into the run", size: 12, anchor: "middle"))
        // The legend: the first 12 instances.
        let shown = panel.instances.prefix(12)
        for (instance, name) in shown.enumerated() {
            let legendY = plotTop + 4 + Double(instance) * 14
            out.append(
                "<rect x=\"\(f(Self.legendLeft))\" y=\"\(f(legendY - 8))\" width=\"12\" height=\"10\" fill=\"\(Self.palette[instance % Self.palette.count])\"/>"
            )
            out.append(text(Self.legendLeft + 18, legendY + 1, name, size: 11))
        }
        if panel.instances.count > shown.count {
            out.append(
                text(Self.legendLeft, plotTop + 4 + Double(shown.count) * 14 + 1, "+\(panel.instances.count - shown.count) more", size: 11))
        }
        out.append("</g>")
        return out
    }

    // MARK: Helpers

    /// Each series' colour, and whether it is dashed: the oracle black; a variant ("name+...") the
    /// colour of its base, dashed.
    static func styles(_ names: [String]) -> [(color: String, dashed: Bool)] {
        var bases: [String] = []
        return names.map { name in
            if name == "oracle" { return ("#222222", false) }
            let base = name.split(separator: "+", maxSplits: 1).first.map(String.init) ?? name
            if !bases.contains(base) { bases.append(base) }
            return (palette[bases.firstIndex(of: base)! % palette.count], base != name)
        }
    }

    /// The 1-2-5 ticks that bound `min`...`max` (seconds), at least a factor of 10 apart.
    static func logRange(min: Double, max: Double) -> (Double, Double) {
        let low = Swift.max(1e-6, min)
        let high = Swift.max(low * 10, max)
        let lower = steps(around: low).last { $0 <= low * (1 + 1e-9) } ?? low
        let upper = steps(around: high).first { $0 >= high * (1 - 1e-9) } ?? high
        return (lower, upper)
    }

    /// 1, 2, 5 × the powers of ten around `value`.
    private static func steps(around value: Double) -> [Double] {
        let decade = floor(log10(value))
        return (-1...1).flatMap { d in [1.0, 2, 5].map { $0 * pow(10, decade + Double(d)) } }
    }

    /// The 1-2-5 ticks from `lo` to `hi`; only powers of ten when there are many decades.
    static func logTicks(_ lo: Double, _ hi: Double) -> [Double] {
        let decades = Int(ceil(log10(hi / lo) - 1e-9))
        let multipliers: [Double] = decades > 3 ? [1] : [1, 2, 5]
        var ticks: [Double] = []
        var decade = floor(log10(lo) + 1e-9)
        while ticks.count < 40 {
            for m in multipliers {
                let tick = m * pow(10, decade)
                if tick >= lo * (1 - 1e-9), tick <= hi * (1 + 1e-9) { ticks.append(tick) }
            }
            if pow(10, decade) > hi { break }
            decade += 1
        }
        return ticks
    }

    static func isPowerOfTen(_ value: Double) -> Bool {
        abs(log10(value) - log10(value).rounded()) < 1e-9
    }

    /// About six round ticks from `lo` to `hi`.
    static func linearTicks(_ lo: Double, _ hi: Double) -> [Double] {
        let span = hi - lo
        guard span > 0 else { return [lo] }
        let raw = span / 6
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var ticks: [Double] = []
        var tick = ceil(lo / step - 1e-9) * step
        while tick <= hi + step * 1e-9, ticks.count < 20 {
            ticks.append(tick)
            tick += step
        }
        return ticks
    }

    static func latencyLabel(_ seconds: Double) -> String {
        if seconds >= 1 { return "\(trimmed(seconds)) s" }
        if seconds >= 1e-3 { return "\(trimmed(seconds * 1e3)) ms" }
        return "\(trimmed(seconds * 1e6)) µs"
    }

    static func secondsLabel(_ seconds: Double) -> String { "\(trimmed(abs(seconds) < 1e-9 ? 0 : seconds)) s" }

    static func percentLabel(_ share: Double) -> String { "\(trimmed(share * 100))%" }

    /// A number without a trailing ".0", to 3 significant decimals.
    static func trimmed(_ value: Double) -> String {
        var text = String(format: "%.3f", value)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    private func f(_ value: Double) -> String { String(format: "%.1f", value) }

    private func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, opacity: Double = 1) -> String {
        let alpha = opacity == 1 ? "" : " stroke-opacity=\"\(opacity)\""
        return "<line x1=\"\(f(x1))\" y1=\"\(f(y1))\" x2=\"\(f(x2))\" y2=\"\(f(y2))\" stroke=\"\(stroke)\" stroke-width=\"1\"\(alpha)/>"
    }

    private func text(
        _ x: Double, _ y: Double, _ content: String, size: Int, anchor: String = "start", weight: String = "normal", fill: String = "#111"
    ) -> String {
        "<text x=\"\(f(x))\" y=\"\(f(y))\" font-size=\"\(size)\" text-anchor=\"\(anchor)\" font-weight=\"\(weight)\" fill=\"\(fill)\">\(escape(content))</text>"
    }

    private func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(character)
            }
        }
        return out
    }
}

extension SVGChart {
    /// A chart of simulation results: the CDF of each, and the shares over time of those named in
    /// `shareOf` (instances named by `instances`).
    init(title: String, subtitle: String, results: [SimulationResult], instances: [String], shareOf: [String]) {
        self.init(
            title: title,
            subtitle: subtitle,
            cdf: results.map { CDFSeries(name: $0.policy, latencies: $0.latencyQuantiles.map { $0.latency.secondsValue }) },
            panels: shareOf.compactMap { name in
                guard let result = results.first(where: { $0.policy == name }) else { return nil }
                return SharePanel(
                    name: name,
                    instances: instances,
                    starts: result.sharesOverTime.map { $0.start.secondsValue },
                    end: result.sharesOverTime.last?.end.secondsValue ?? 0,
                    requests: result.sharesOverTime.map(\.requests)
                )
            }
        )
    }
}
