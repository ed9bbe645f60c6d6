/// Answers of `GET /v1/health/service/:service` as a real agent writes them, built from the facts
/// of Consul's API documentation (the fields of its sample response: `Node` with `ID`, `Node`,
/// `Address`, `Datacenter`, `TaggedAddresses`, `Meta`; `Service` with `ID`, `Service`, `Tags`,
/// `Address`, `TaggedAddresses`, `Meta`, `Port`, `Weights`, `Namespace`; `Checks` with `Node`,
/// `CheckID`, `Name`, `Status`, `Notes`, `Output`, `ServiceID`, `ServiceName`, `ServiceTags`) and
/// of how Consul encodes them (a zero `Port` is omitted; nil slices and maps are `null`; indexes
/// are unsigned 64-bit). The names and values are this project's own.
enum HealthServiceFixtures {
    /// The documented shape: one instance with its own address, weights, tags, a service check
    /// and the node's `serfHealth`, plus the fields the client ignores (`TaggedAddresses`,
    /// `Namespace`, `CreateIndex`/`ModifyIndex`, `Proxy`, `Connect`...).
    static let documented = """
        [
          {
            "Node": {
              "ID": "7d6b3a84-1c0e-4f55-9b1d-2e8c51a0f3c2",
              "Node": "worker-7",
              "Address": "192.168.40.7",
              "Datacenter": "eu-west",
              "TaggedAddresses": {"lan": "192.168.40.7", "wan": "203.0.113.7"},
              "Meta": {"rack": "r12"},
              "CreateIndex": 41,
              "ModifyIndex": 97
            },
            "Service": {
              "ID": "billing-7a",
              "Service": "billing",
              "Tags": ["blue", "v3"],
              "Address": "192.168.40.70",
              "TaggedAddresses": {
                "lan": {"address": "192.168.40.70", "port": 7300},
                "wan": {"address": "203.0.113.70", "port": 17300}
              },
              "Meta": {"build": "2024.06"},
              "Port": 7300,
              "Weights": {"Passing": 12, "Warning": 2},
              "EnableTagOverride": false,
              "Proxy": {"MeshGateway": {}, "Expose": {}},
              "Connect": {},
              "Namespace": "default",
              "CreateIndex": 52,
              "ModifyIndex": 52
            },
            "Checks": [
              {
                "Node": "worker-7",
                "CheckID": "serfHealth",
                "Name": "Serf Health Status",
                "Status": "passing",
                "Notes": "",
                "Output": "Agent alive and reachable",
                "ServiceID": "",
                "ServiceName": "",
                "ServiceTags": [],
                "Type": "",
                "Namespace": "default",
                "CreateIndex": 41,
                "ModifyIndex": 41
              },
              {
                "Node": "worker-7",
                "CheckID": "service:billing-7a",
                "Name": "Service 'billing' check",
                "Status": "passing",
                "Notes": "",
                "Output": "",
                "ServiceID": "billing-7a",
                "ServiceName": "billing",
                "ServiceTags": ["blue", "v3"],
                "Type": "ttl",
                "Namespace": "default",
                "CreateIndex": 52,
                "ModifyIndex": 60
              }
            ]
          }
        ]
        """

    /// Three entries: a good one, one without `Port` (Consul omits a zero port), and one on a Unix
    /// socket (`SocketPath`, no `Port`).
    static let portless = """
        [
          {
            "Node": {"ID": "", "Node": "worker-1", "Address": "10.20.0.1", "Datacenter": "dc1"},
            "Service": {"ID": "api-1", "Service": "api", "Tags": [], "Address": "", "Meta": {}, "Port": 9100,
                        "Weights": {"Passing": 1, "Warning": 1}},
            "Checks": [{"Node": "worker-1", "CheckID": "serfHealth", "Status": "passing"}]
          },
          {
            "Node": {"ID": "", "Node": "worker-2", "Address": "10.20.0.2", "Datacenter": "dc1"},
            "Service": {"ID": "api-2", "Service": "api", "Tags": [], "Address": "10.20.0.22", "Meta": {},
                        "Weights": {"Passing": 1, "Warning": 1}},
            "Checks": [{"Node": "worker-2", "CheckID": "serfHealth", "Status": "passing"}]
          },
          {
            "Node": {"ID": "", "Node": "worker-3", "Address": "10.20.0.3", "Datacenter": "dc1"},
            "Service": {"ID": "api-3", "Service": "api", "Tags": [], "Address": "", "Meta": {},
                        "SocketPath": "/run/api/api.sock", "Weights": {"Passing": 1, "Warning": 1}},
            "Checks": [{"Node": "worker-3", "CheckID": "serfHealth", "Status": "passing"}]
          }
        ]
        """

    /// `null` where Go encodes a nil slice or map: `Tags`, `Meta`, `Weights`, the node's
    /// `TaggedAddresses` and `Meta`, and a check's `ServiceTags`.
    static let nulls = """
        [
          {
            "Node": {"ID": "", "Node": "worker-4", "Address": "10.20.0.4", "Datacenter": "dc1",
                     "TaggedAddresses": null, "Meta": null},
            "Service": {"ID": "api-4", "Service": "api", "Tags": null, "Address": "", "Meta": null,
                        "Port": 9100, "Weights": null},
            "Checks": [{"Node": "worker-4", "CheckID": "serfHealth", "Status": "passing", "ServiceTags": null}]
          }
        ]
        """

    /// Fields no version of the client knows, at every level, including nested objects, lists
    /// and numbers that do not fit 32 bits.
    static let unknownFields = """
        [
          {
            "Node": {"ID": "", "Node": "worker-5", "Address": "10.20.0.5", "Datacenter": "dc1",
                     "Partition": "default", "PeerName": "", "Locality": {"Region": "eu", "Zone": "eu-1a"}},
            "Service": {"ID": "api-5", "Service": "api", "Tags": ["v1"], "Address": "10.20.0.55", "Meta": {},
                        "Port": 9105, "Weights": {"Passing": 4, "Warning": 1, "Future": 9},
                        "Kind": "", "Locality": null, "FutureList": [1, "two", {"three": 3}],
                        "CreateIndex": 8589934592, "ModifyIndex": 18446744073709551615},
            "Checks": [{"Node": "worker-5", "CheckID": "serfHealth", "Status": "passing",
                        "ExposedPort": 0, "Definition": {"Interval": "0s"}}],
            "FutureTopLevel": {"anything": [true, null]}
          }
        ]
        """

    /// An `X-Consul-Index` above 2^32 (indexes are unsigned 64-bit).
    static let largeIndex: UInt64 = 5_000_000_123
}
