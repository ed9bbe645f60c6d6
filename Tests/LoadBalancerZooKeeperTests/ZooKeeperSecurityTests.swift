import Foundation
import InMemoryLogging
import LoadBalancer
import LoadBalancerTestKit
import LoadBalancerTestServers
import LoadBalancerZooKeeper
import Logging
import Testing

/// Expects `body` to fail with a ZooKeeper error of `code` and returns it.
@discardableResult
func expectError(
    _ code: ZooKeeperError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> ZooKeeperError? {
    do {
        try await body()
        Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
    } catch let error as ZooKeeperError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// A fresh directory for one test's certificates (deleted with `removeCertificates`).
func certificateDirectory() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("lb-zk-tls-\(UUID().uuidString)")
}

func removeCertificates(_ certificates: TestCertificates...) {
    for certificate in certificates { try? FileManager.default.removeItem(at: certificate.directory) }
}

@Suite(
    "ZooKeeper security (digest, ACLs, TLS) against real ZooKeeper servers", .enabled(if: ZooKeeperEnsemble.enabled), .serialized,
    .timeLimit(.minutes(TestTimeScale.suiteLimitMinutes)))
struct ZooKeeperSecurityTests {
    static let alice = ZooKeeperConfiguration.Credentials(username: "alice", password: "right-password")

    @Test("with credentials, the registration is protected: no credentials or a wrong password cannot delete or change it")
    func protectedRegistration() async throws {
        let ensemble = try await ZooKeeperEnsemble.start(security: .init())
        defer { ensemble.destroy() }
        var owner = ensemble.configuration()
        owner.credentials = Self.alice
        let client = ZooKeeperClient(configuration: owner)
        let instance = try Instance(host: "127.0.0.7", port: 7007)
        let log = InMemoryLogHandler()
        let registrar = ZooKeeperRegistrar(instance: instance, path: "/svc/api", client: client, logger: Logger(label: "test") { _ in log })
        let anonymous = ZooKeeperClient(configuration: ensemble.configuration())
        var wrong = ensemble.configuration()
        wrong.credentials = .init(username: "alice", password: "wrong-password")
        let impostor = ZooKeeperClient(configuration: wrong)
        let sameUser = ZooKeeperClient(configuration: owner)
        try await withRunning([
            { try? await client.run() }, { try? await registrar.run() }, { try? await anonymous.run() }, { try? await impostor.run() },
            { try? await sameUser.run() },
        ]) {
            try await eventually("registered") { registrar.registeredNode != nil }
            let node = try #require(registrar.registeredNode)
            let expected: [ZooKeeperACL] = [
                .init(permissions: .all, id: .digest(username: "alice", password: "right-password")),
                .init(permissions: .read, id: .anyone),
            ]
            // The default with credentials, on the node and the parents the registrar created.
            #expect(try await client.getACL(node).acl == expected)
            #expect(try await client.getACL("/svc/api").acl == expected)
            #expect(try await client.getACL("/svc").acl == expected)

            try await connected(anonymous)
            // Everyone may read...
            #expect(try await anonymous.getChildren("/svc/api").children == [String(node.split(separator: "/").last ?? "")])
            // ...but not delete (the parent's ACL decides) or change it.
            let refused = await expectError(.noAuth) { try await anonymous.delete(node) }
            #expect(refused?.message.contains("not authorized to delete \(node)") == true, "\(String(describing: refused))")
            #expect(refused?.message.contains("world:anyone only") == true, "\(String(describing: refused))")
            await expectError(.noAuth) { try await anonymous.setData(node, data: Array("127.0.0.1:1".utf8)) }

            // The same user with a wrong password is another identity: refused, and the error names
            // the user but not the password.
            try await connected(impostor)
            let wrongPassword = await expectError(.noAuth) { try await impostor.delete(node) }
            #expect(wrongPassword?.description.contains(#"digest user "alice""#) == true, "\(String(describing: wrongPassword))")
            #expect(wrongPassword?.description.contains("wrong-password") == false)
            await expectError(.noAuth) { try await impostor.setData(node, data: Array("127.0.0.1:1".utf8)) }
            #expect(try await client.exists(node) != nil, "still registered")

            // Another session with the right credentials is the same identity: it may.
            try await connected(sameUser)
            try await sameUser.setData(node, data: Array("127.0.0.7:7007".utf8))
            // Without credentials, a creator ACL is refused as such.
            let invalid = await expectError(.invalidACL) { try await anonymous.create("/other", acl: .creatorAll) }
            #expect(invalid?.message.contains("needs credentials") == true, "\(String(describing: invalid))")

            // A parent created open (before credentials were set): the registrar says its node
            // can be deleted by anyone, and it can; the protected one said nothing.
            try await anonymous.create("/open")
            let openLog = InMemoryLogHandler()
            let exposed = ZooKeeperRegistrar(
                instance: instance, path: "/open", client: sameUser, logger: Logger(label: "test") { _ in openLog })
            try await withRunning([{ try? await exposed.run() }]) {
                try await eventually("the warning") {
                    openLog.entries.contains { $0.level == .warning && "\($0.message)".contains("parent lets anyone delete") }
                }
                let exposedNode = try #require(exposed.registeredNode)
                try await anonymous.delete(exposedNode)
            }
            #expect(!log.entries.contains { "\($0.message)".contains("parent lets anyone delete") }, "\(log.entries.map(\.message))")
        }
    }

    @Test("the publisher reads nodes whose ACL grants its user read; one it may not read is left out and reported")
    func readACLGrantedToThePublisher() async throws {
        let ensemble = try await ZooKeeperEnsemble.start(security: .init())
        defer { ensemble.destroy() }
        var owner = ensemble.configuration()
        owner.credentials = Self.alice
        let client = ZooKeeperClient(configuration: owner)
        let readerID = ZooKeeperACL.Id.digest(username: "reader", password: "reader-password")
        let registered = try Instance(host: "127.0.0.8", port: 8008)
        let registrar = ZooKeeperRegistrar(
            instance: registered, path: "/svc", client: client,
            acl: [.init(permissions: .all, id: .creator), .init(permissions: .read, id: readerID)])
        var readerConfiguration = ensemble.configuration()
        readerConfiguration.credentials = .init(username: "reader", password: "reader-password")
        let readerClient = ZooKeeperClient(configuration: readerConfiguration)
        let reader = ZooKeeperPublisher(path: "/svc", client: readerClient)
        let readerUpdates = Recorder()
        let strangerClient = ZooKeeperClient(configuration: ensemble.configuration())
        let stranger = ZooKeeperPublisher(path: "/svc", client: strangerClient)
        let strangerUpdates = Recorder()
        try await withRunning([{ try? await client.run() }]) {
            try await connected(client)
            // The parent: listed by everyone, changed by alice only.
            try await client.create("/svc")
            try await client.create("/svc/open", data: Array("127.0.0.9:9009".utf8))
            try await withRunning([
                { try? await registrar.run() }, { try? await readerClient.run() }, { try? await reader.run() },
                { for await update in reader.updates() { readerUpdates.record(update) } },
                { try? await strangerClient.run() }, { try? await stranger.run() },
                { for await update in stranger.updates() { strangerUpdates.record(update) } },
            ]) {
                try await eventually("registered") { registrar.registeredNode != nil }
                let node = try #require(registrar.registeredNode)
                try await eventually("the reader sees both") { readerUpdates.ids == [registered.id, "127.0.0.9:9009"] }
                #expect(readerUpdates.latest?.error == nil)
                try await eventually("the stranger sees the open one, and reports the other") {
                    strangerUpdates.ids == ["127.0.0.9:9009"] && strangerUpdates.latest?.error?.code == .invalidInstances
                }
                let message = strangerUpdates.latest?.error?.message ?? ""
                #expect(message.contains(node) && message.contains("not authorized to read"), "\(message)")
            }

            // A publisher that creates its parent as another user grants the registrars' user
            // `create` with its `acl:`; with its client's default, alice is refused, and told why.
            let aliceID = ZooKeeperACL.Id.digest(username: "alice", password: "right-password")
            let otherUser = ZooKeeperClient(configuration: readerConfiguration)
            let granting = ZooKeeperPublisher(
                path: "/granted", client: otherUser,
                acl: [.init(permissions: .all, id: .creator), .init(permissions: [.read, .create], id: aliceID)])
            let closed = ZooKeeperPublisher(path: "/closed", client: otherUser)
            try await withRunning([{ try? await otherUser.run() }, { try? await granting.run() }, { try? await closed.run() }]) {
                try await eventually("both parents created") {
                    let granted = try? await client.exists("/granted")
                    let closed = try? await client.exists("/closed")
                    return granted != nil && closed != nil
                }
                try await client.create("/granted/a", data: Array("127.0.0.1:1".utf8))
                let refusal = await expectError(.noAuth) { try await client.create("/closed/a", data: Array("127.0.0.1:1".utf8)) }
                #expect(
                    refusal?.message.contains("not authorized to create /closed/a: its parent's ACL") == true,
                    "\(String(describing: refusal))")
            }
        }
    }

    @Test(
        "a child the publisher may not read, created and deleted after its first listing: reported, then no longer (no event of the persistent watch names it)"
    )
    func unreadableChildAfterTheFirstListing() async throws {
        let ensemble = try await ZooKeeperEnsemble.start(security: .init())
        defer { ensemble.destroy() }
        var owner = ensemble.configuration()
        owner.credentials = Self.alice
        let client = ZooKeeperClient(configuration: owner)
        let strangerClient = ZooKeeperClient(configuration: ensemble.configuration())
        let stranger = ZooKeeperPublisher(path: "/svc", client: strangerClient)
        let updates = Recorder()
        try await withRunning([{ try? await client.run() }, { try? await strangerClient.run() }]) {
            try await connected(client)
            // Readable by everyone (alice's default ACL: she may do everything, everyone may read).
            try await client.create("/svc")
            try await client.create("/svc/open", data: Array("127.0.0.9:9009".utf8))
            try await withRunning([{ try? await stranger.run() }, updates.recording(stranger)]) {
                try await eventually("the open one") { updates.ids == ["127.0.0.9:9009"] && stranger.usesPersistentWatch }
                #expect(updates.latest?.error == nil)
                // Only alice may read it: the server sends the stranger's persistent watch no event
                // of it (where it has the fix of CVE-2024-23944); its child watch on /svc fires.
                let closed = try await client.create(
                    "/svc/closed", data: Array("127.0.0.8:8008".utf8), acl: [.init(permissions: .all, id: .creator)])
                try await eventually("reported") { updates.latest?.error?.code == .invalidInstances }
                #expect(updates.ids == ["127.0.0.9:9009"])
                let message = updates.latest?.error?.message ?? ""
                #expect(message.contains(closed) && message.contains("not authorized to read"), "\(message)")
                try await client.delete(closed)
                try await eventually("no longer reported") { updates.latest.map { $0.error == nil } ?? false }
                #expect(updates.ids == ["127.0.0.9:9009"])
                #expect(updates.neverEmptiedOnceFilled)
            }
        }
    }

    @Test("a server that refuses the credentials: a clear authFailed error, no session, no password shown")
    func refusedCredentials() async throws {
        // The digest provider turned off: the server answers AUTHFAILED to `addauth digest`.
        let ensemble = try await ZooKeeperEnsemble.start(security: .init(digest: false))
        defer { ensemble.destroy() }
        var configuration = ensemble.configuration()
        configuration.credentials = Self.alice
        let client = ZooKeeperClient(configuration: configuration)
        let events = EventLog()
        let stream = client.events()
        let control = ZooKeeperClient(configuration: ensemble.configuration())
        try await withRunning([
            { try? await client.run() }, { for await event in stream { events.record(event) } }, { try? await control.run() },
        ]) {
            try await connected(control) // the server serves clients without credentials
            try await eventually("refused") {
                events.all.contains { if case .connectFailed(let error) = $0 { error.code == .authFailed } else { false } }
            }
            let refusal = events.all.compactMap { event -> ZooKeeperError? in
                if case .connectFailed(let error) = event, error.code == .authFailed { error } else { nil }
            }.first
            let text = "\(String(describing: refusal))"
            #expect(text.contains(#"authentication failed for scheme digest, user "alice""#), "\(text)")
            #expect(!text.contains("right-password"))
            #expect(!client.isConnected)
            #expect(!events.all.contains { if case .connected = $0 { true } else { false } })
            await expectError(.connectionLoss) { _ = try await client.exists("/") }
        }
    }

    @Test("TLS: a trusted server works; an untrusted certificate, another host name and plain TCP are refused")
    func tlsVerification() async throws {
        // The server's certificate names zookeeper.test only: connecting to 127.0.0.1 verifies
        // that name (serverHostname), or fails the host name check, which is on by default.
        let certificates = try await TestCertificates.make(in: certificateDirectory(), serverName: "zookeeper.test")
        let ensemble = try await ZooKeeperEnsemble.start(security: .init(tls: certificates))
        defer { ensemble.destroy() }
        var named = ensemble.secureConfiguration()
        named.tls?.serverHostname = "zookeeper.test"
        let secure = ZooKeeperClient(configuration: named)
        var noNameCheck = ensemble.secureConfiguration()
        noNameCheck.tls?.verifyHostname = false
        let unchecked = ZooKeeperClient(configuration: noNameCheck)

        let stranger = try await TestCertificates.make(in: certificateDirectory(), serverName: "zookeeper.test")
        defer { removeCertificates(certificates, stranger) }
        var untrusted = named
        untrusted.tls?.trustRootsPath = stranger.caPath
        let byAddress = ensemble.secureConfiguration()
        var plain = ensemble.secureConfiguration()
        plain.tls = nil

        let refused = [
            ("an untrusted certificate", untrusted), ("a certificate for another host", byAddress), ("plain TCP to the TLS port", plain),
        ]
        let clients = refused.map { ZooKeeperClient(configuration: $0.1) }
        let logs = clients.map { _ in EventLog() }
        let streams = clients.map { $0.events() }
        var services: [@Sendable () async -> Void] = [{ try? await secure.run() }, { try? await unchecked.run() }]
        for index in clients.indices {
            let (client, log, stream) = (clients[index], logs[index], streams[index])
            services += [{ try? await client.run() }, { for await event in stream { log.record(event) } }]
        }
        try await withRunning(services) {
            try await connected(secure)
            try await secure.create("/tls/x", data: Array("hello".utf8), createParents: true)
            #expect(try await secure.getData("/tls/x").data == Array("hello".utf8))
            // The chain is still checked; the name is not.
            try await connected(unchecked)
            #expect(try await unchecked.getData("/tls/x").data == Array("hello".utf8))
            for (index, (what, _)) in refused.enumerated() {
                let failures = {
                    logs[index].all.compactMap { event -> ZooKeeperError? in
                        if case .connectFailed(let error) = event { error } else { nil }
                    }
                }
                try await eventually("\(what) refused, twice") { failures().count >= 2 }
                #expect(!clients[index].isConnected, "\(what)")
                #expect(!logs[index].all.contains { if case .connected = $0 { true } else { false } }, "\(what)")
                if index < 2 {
                    #expect(failures().allSatisfy { $0.message.contains("TLS handshake failed") }, "\(what): \(failures())")
                }
            }
        }
    }

    @Test("TLS with client certificates required: a client without one is refused; with one, it is x509-authenticated")
    func tlsClientCertificate() async throws {
        let certificates = try await TestCertificates.make(in: certificateDirectory(), client: true)
        let ensemble = try await ZooKeeperEnsemble.start(security: .init(tls: certificates, clientAuth: "need"))
        defer {
            ensemble.destroy()
            removeCertificates(certificates)
        }
        var withCertificate = ensemble.secureConfiguration()
        withCertificate.tls?.clientCertificatePath = certificates.clientCertificatePath
        withCertificate.tls?.clientKeyPath = certificates.clientKeyPath
        let client = ZooKeeperClient(configuration: withCertificate)
        let without = ZooKeeperClient(configuration: ensemble.secureConfiguration())
        let events = EventLog()
        let stream = without.events()
        try await withRunning([
            { try? await client.run() }, { try? await without.run() }, { for await event in stream { events.record(event) } },
        ]) {
            try await connected(client)
            // The certificate is an identity: a creator ACL works without digest credentials.
            try await client.create("/cert", acl: .creatorAll)
            #expect(try await client.getACL("/cert").acl == [.init(permissions: .all, id: .init(scheme: "x509", id: "CN=client"))])
            try await eventually("refused without a certificate") {
                events.all.count { if case .connectFailed = $0 { true } else { false } } >= 2
            }
            #expect(!without.isConnected)
        }
    }

    @Test("over TLS with credentials, the session survives a server restart and authenticates again")
    func tlsSessionSurvivesRestart() async throws {
        let certificates = try await TestCertificates.make(in: certificateDirectory())
        let ensemble = try await ZooKeeperEnsemble.start(security: .init(tls: certificates))
        defer {
            ensemble.destroy()
            removeCertificates(certificates)
        }
        let server = ensemble.servers[0]
        var configuration = ensemble.secureConfiguration(sessionTimeout: .seconds(10))
        configuration.credentials = Self.alice
        let client = ZooKeeperClient(configuration: configuration)
        let events = EventLog()
        let stream = client.events()
        let publisher = ZooKeeperPublisher(path: "/svc", client: client)
        let recorder = Recorder()
        try await withRunning([
            { try? await client.run() }, { for await event in stream { events.record(event) } },
            { try? await publisher.run() }, { for await update in publisher.updates() { recorder.record(update) } },
        ]) {
            try await connected(client)
            try await eventually("the parent") { (try? await client.exists("/svc")) != nil }
            try await client.create("/svc/a", data: Array("127.0.0.1:8001".utf8))
            try await eventually("a") { recorder.ids == ["127.0.0.1:8001"] }
            let session = client.sessionID

            await ensemble.kill(server)
            try await eventually("disconnected") { events.all.contains(.disconnected) }
            #expect(recorder.ids == ["127.0.0.1:8001"], "the last good set stays")
            try await ensemble.restart(server)
            try await eventually("reconnected in the same session") {
                events.all.contains(.connected(sessionID: session, newSession: false)) && client.isConnected
            }
            // Only alice may change /svc/a (its ACL is the creator's): the new connection
            // authenticated again.
            try await client.setData("/svc/a", data: Array("127.0.0.1:8011".utf8))
            try await client.create("/svc/b", data: Array("127.0.0.1:8002".utf8))
            try await eventually("changes after the restart") { recorder.ids == ["127.0.0.1:8002", "127.0.0.1:8011"] }
            #expect(client.sessionID == session)
            #expect(!events.all.contains(.sessionExpired))
            #expect(recorder.neverEmptiedOnceFilled)
        }
    }
}
