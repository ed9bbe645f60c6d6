import Foundation

/// A certificate authority and a server certificate for 127.0.0.1 that it signed, made with
/// `openssl` for TLS tests (valid for two days).
public struct TestCertificates: Sendable {
    /// The CA certificate (PEM): what clients trust.
    public var caPath: String
    /// The server's certificate (PEM), with `IP:127.0.0.1` as its subject alternative name.
    public var certificatePath: String
    /// The server's private key (PEM).
    public var keyPath: String

    /// Makes the files in `directory` (created if needed).
    public static func make(in directory: URL) async throws -> TestCertificates {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: path("san.cnf"), atomically: true, encoding: .utf8)
        try await EtcdCluster.run(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path("ca.key"), "-out", path("ca.pem"),
                "-days", "2", "-subj", "/CN=swift-loadbalancer test CA",
            ])
        try await EtcdCluster.run(
            "/usr/bin/openssl",
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", path("server.key"), "-out", path("server.csr"),
                "-subj", "/CN=127.0.0.1",
            ])
        try await EtcdCluster.run(
            "/usr/bin/openssl",
            [
                "x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                "-CAcreateserial", "-out", path("server.pem"), "-days", "2", "-extfile", path("san.cnf"),
            ])
        return TestCertificates(caPath: path("ca.pem"), certificatePath: path("server.pem"), keyPath: path("server.key"))
    }
}
