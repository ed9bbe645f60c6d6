import ArgumentParser

/// Checks that several lbctl commands make of their options.
enum OptionChecks {
    /// A number of seconds, if given: positive, finite, and at most a day (so that it fits a
    /// `Duration`).
    static func seconds(_ value: Double?, _ name: String) throws {
        guard let value else { return }
        guard value > 0, value <= 86_400 else { throw ValidationError("\(name) must be a positive number of seconds, at most 86400") }
    }

    /// An option (`name`) that is only allowed with another (`required`), when that other is not given.
    static func needs(_ value: (some Any)?, _ name: String, _ required: String) throws {
        if value != nil { throw ValidationError("\(name) needs \(required)") }
    }
}
