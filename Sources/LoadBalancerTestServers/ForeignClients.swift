import Foundation

// Clients of the registries that no one here wrote, for the interoperability tests: kazoo (the
// Python ZooKeeper client, Debian's python3-kazoo) and etcdctl (Debian's etcd-client).

/// Python with kazoo, running a script the test passes.
public enum Kazoo {
    /// The Python interpreter Debian's `python3-kazoo` is installed for.
    public static let python = "/usr/bin/python3"

    /// Starts `python3 -c script arguments...`; its standard input stays open until the test
    /// closes it (``ChildProcess/closeInput()``), so a script can hold its session (and its
    /// ephemeral nodes) until then.
    public static func start(_ script: String, _ arguments: [String]) throws -> ChildProcess {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw ClusterError("\(python) is missing (apt-get install python3-kazoo)")
        }
        return try ChildProcess(program: python, ["-c", script] + arguments, keepInputOpen: true)
    }

    /// Runs `python3 -c script arguments...` to its end; throws, with its output, unless it exits with 0.
    @discardableResult
    public static func run(_ script: String, _ arguments: [String], timeout: Duration = .seconds(60)) async throws -> String {
        let process = try start(script, arguments)
        process.closeInput()
        let status = try await process.exitStatus(timeout: timeout)
        guard status == 0 else {
            throw ClusterError("the kazoo script failed (status \(status)): \(process.stderr)\(process.stdout)")
        }
        return process.stdout
    }
}

/// etcd's own command-line client (API v3).
public enum Etcdctl {
    /// Runs `etcdctl --endpoints ... arguments...` against `cluster`'s running members and returns
    /// what it printed; throws, with its output, unless it exits with 0.
    @discardableResult
    public static func run(_ arguments: [String], cluster: EtcdCluster, timeout: Duration = .seconds(30)) async throws -> String {
        guard
            let binary = ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else {
            throw ClusterError("etcdctl is not installed (apt-get install etcd-client)")
        }
        let endpoints = cluster.running().map { "http://127.0.0.1:\($0.clientPort)" }.joined(separator: ",")
        let process = try ChildProcess(program: binary, ["--endpoints", endpoints] + arguments, environment: ["ETCDCTL_API": "3"])
        let status = try await process.exitStatus(timeout: timeout)
        guard status == 0 else {
            throw ClusterError("etcdctl \(arguments.joined(separator: " ")) failed (status \(status)): \(process.stderr)")
        }
        return process.stdout
    }
}
