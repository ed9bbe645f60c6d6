import Foundation

/// A certificate authority and a server certificate for 127.0.0.1 that it signed (and, when asked,
/// a client certificate), made with `openssl` for TLS tests (valid for two days).
public struct TestCertificates: Sendable {
    /// The CA certificate (PEM): what clients trust.
    public var caPath: String
    /// The server's certificate (PEM), with `IP:127.0.0.1` as its subject alternative name (or
    /// `DNS:` the name `make(in:client:serverName:)` was given).
    public var certificatePath: String
    /// The server's private key (PEM).
    public var keyPath: String
    /// A client certificate the CA signed (PEM, `CN=client`), when `make(in:client:)` was asked for one.
    public var clientCertificatePath: String?
    /// The client certificate's private key (PEM).
    public var clientKeyPath: String?
    /// The directory holding the files.
    public var directory: URL

    /// Makes the files in `directory` (created if needed); with `client`, a client certificate too.
    /// With `serverName`, the server's certificate names that DNS name only (not 127.0.0.1).
    public static func make(in directory: URL, client: Bool = false, serverName: String? = nil) async throws -> TestCertificates {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        try "subjectAltName=\(serverName.map { "DNS:\($0)" } ?? "IP:127.0.0.1")\n".write(
            toFile: path("san.cnf"), atomically: true, encoding: .utf8)
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
                "-subj", "/CN=\(serverName ?? "127.0.0.1")",
            ])
        try await EtcdCluster.run(
            "/usr/bin/openssl",
            [
                "x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                "-CAcreateserial", "-out", path("server.pem"), "-days", "2", "-extfile", path("san.cnf"),
            ])
        var certificates = TestCertificates(
            caPath: path("ca.pem"), certificatePath: path("server.pem"), keyPath: path("server.key"), directory: directory)
        if client {
            try await EtcdCluster.run(
                "/usr/bin/openssl",
                [
                    "req", "-newkey", "rsa:2048", "-nodes", "-keyout", path("client.key"), "-out", path("client.csr"),
                    "-subj", "/CN=client",
                ])
            try await EtcdCluster.run(
                "/usr/bin/openssl",
                [
                    "x509", "-req", "-in", path("client.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                    "-CAcreateserial", "-out", path("client.pem"), "-days", "2",
                ])
            certificates.clientCertificatePath = path("client.pem")
            certificates.clientKeyPath = path("client.key")
        }
        return certificates
    }

    /// The server's certificate and key as a PKCS#12 key store, and the CA as a PKCS#12 trust
    /// store (made with `openssl`), both with `password`: what a Java server (ZooKeeper) reads.
    public func javaStores(password: String) async throws -> (keyStore: String, trustStore: String) {
        let keyStore = directory.appendingPathComponent("server.p12").path
        let trustStore = directory.appendingPathComponent("trust.p12").path
        try await EtcdCluster.run(
            "/usr/bin/openssl",
            ["pkcs12", "-export", "-in", certificatePath, "-inkey", keyPath, "-out", keyStore, "-passout", "pass:\(password)"])
        // A trust store holds certificates without keys; Java reads openssl's when the entry is
        // marked trusted, which keytool does (it comes with the JRE).
        // keytool starts a JVM; one run of the whole suite saw it exit 1 (its output was not kept)
        // while several ZooKeeper JVMs started. It gets three tries, each on a fresh file, and its
        // output names the cause if all fail.
        let log = directory.appendingPathComponent("keytool.log").path
        var failure: (any Error)?
        for _ in 0..<3 {
            try? FileManager.default.removeItem(atPath: trustStore)
            do {
                try await EtcdCluster.run(
                    "/bin/sh",
                    [
                        "-c", "exec /usr/bin/keytool \"$@\" >>\"$0\" 2>&1", log,
                        "-importcert", "-noprompt", "-alias", "ca", "-file", caPath, "-keystore", trustStore, "-storetype", "PKCS12",
                        "-storepass", password,
                    ])
                return (keyStore, trustStore)
            } catch {
                failure = error
            }
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw ClusterError("keytool failed three times: \(failure.map { "\($0)" } ?? "") output: \(output)")
    }
}
