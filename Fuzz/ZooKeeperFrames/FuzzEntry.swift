// libFuzzer entry point for the ZooKeeper frame decoder and the reply records. Built by
// scripts/fuzz.sh zookeeper with Jute.swift and ZooKeeperProtocol.swift (which need nothing else).
//
// The input is a byte stream as a server might send it: the decoder splits it into frames (in
// chunks of a size taken from the first byte, as TCP might deliver it); the first frame is read as
// the session handshake, every later one as a reply (a watch event, the answer to the credentials
// sent with `addauth` (xid -4, accepted or refused), or a reply body: a stat, children, data, a path
// or an ACL). Any input must end in frames or a typed error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzZooKeeperFrames(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    let chunk = Int(first % 17) + 1
    var decoder = ZooKeeperFrameDecoder()
    var frames = 0
    var offset = 1
    while offset < bytes.count {
        decoder.append(bytes[offset..<min(bytes.count, offset + chunk)])
        offset += chunk
        do {
            while let frame = try decoder.next() {
                if frames == 0 {
                    _ = try? ZooKeeperRecords.connectResponse(frame)
                } else {
                    _ = try? ZooKeeperFrame.validate(frame)
                }
                frames += 1
            }
        } catch {
            return 0 // a broken stream: the client drops the connection here
        }
    }
    return 0
}
