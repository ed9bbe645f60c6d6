import Benchmark
import LoadBalancerDNS

// Parsing a DNS answer of 40 SRV records (with compressed owner names, as servers send them)
// and an A record for each target in the additional section.

let benchmarks: @Sendable () -> Void = {
    let answer = fortyRecordAnswer()
    Benchmark(
        "parse a 40-record SRV answer (\(answer.count) bytes)",
        configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo, maxDuration: .seconds(2))
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! DNSMessage.parse(answer))
        }
    }
}

func fortyRecordAnswer() -> [UInt8] {
    var bytes: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 40, 0, 0, 0, 40]
    func u16(_ v: Int) { bytes += [UInt8(v >> 8), UInt8(v & 0xFF)] }
    func name(_ n: String) {
        for label in n.split(separator: ".") {
            bytes.append(UInt8(label.utf8.count))
            bytes += Array(label.utf8)
        }
        bytes.append(0)
    }
    name("_http._tcp.svc.example.com")
    u16(33)
    u16(1)
    for i in 0..<40 {
        bytes += [0xC0, 12] // owner: the question's name
        u16(33)
        u16(1)
        u16(0)
        u16(30)
        let target = "t\(i)"
        u16(6 + 1 + target.utf8.count + 2)
        u16(10)
        u16(5)
        u16(8000 + i)
        bytes.append(UInt8(target.utf8.count))
        bytes += Array(target.utf8)
        bytes += [0xC0, 23] // "svc.example.com" inside the question name
    }
    for i in 0..<40 {
        let target = "t\(i)"
        bytes.append(UInt8(target.utf8.count))
        bytes += Array(target.utf8)
        bytes += [0xC0, 23]
        u16(1)
        u16(1)
        u16(0)
        u16(30)
        u16(4)
        bytes += [127, 0, 1, UInt8(i + 1)]
    }
    return bytes
}
