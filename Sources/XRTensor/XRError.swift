import Foundation

/// The error users see: what went wrong, where (file, field / key / YAML line:column / CSV row),
/// and what to do about it.
public struct XRError: Error, LocalizedError, CustomStringConvertible, Equatable, Sendable {
    /// The file (or directory) the problem is in, if any.
    public var file: String?
    /// The field, tensor name, key, CSV column or `line:column` the problem is at, if any.
    public var field: String?
    /// What went wrong.
    public var message: String
    /// What the user can do about it.
    public var hint: String?

    public init(_ message: String, file: String? = nil, field: String? = nil, hint: String? = nil) {
        self.message = message
        self.file = file
        self.field = field
        self.hint = hint
    }

    public var description: String {
        var s = ""
        if let file { s += file }
        if let field { s += s.isEmpty ? field : ": \(field)" }
        s += s.isEmpty ? message : ": \(message)"
        if let hint { s += "\nHINT: \(hint)" }
        return s
    }

    public var errorDescription: String? { description }
}
