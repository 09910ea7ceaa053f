import Foundation
import XRTensor
import XRData

/// One image to encode: where it is and the id it carries in outputs.
public struct ImageInput: Sendable, Equatable, Codable {
    /// Absolute or working-directory-relative path used to read the file.
    public var url: URL
    /// The path as written in outputs: relative to the input folder or as given in the manifest.
    public var id: String

    public init(url: URL, id: String) {
        self.url = url
        self.id = id
    }
}

/// Builds the ordered list of images for `xrlab embed` from a folder or a manifest CSV.
public enum InputList {
    /// File extensions read as images.
    public static let imageExtensions: Set<String> = ImageDecoder.extensions

    /// A folder (walked recursively, sorted by relative path) or a manifest CSV
    /// (`column` holds paths relative to the manifest's folder, or absolute).
    public static func resolve(_ url: URL, column: String = "path") throws -> [ImageInput] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw XRError("input not found", file: url.path, hint: "pass a folder of PNG files or a manifest CSV")
        }
        if isDir.boolValue { return try folder(url) }
        if url.pathExtension.lowercased() == "csv" { return try manifest(url, column: column) }
        if imageExtensions.contains(url.pathExtension.lowercased()) {
            return [ImageInput(url: url, id: url.lastPathComponent)]
        }
        throw XRError("not a folder, a manifest CSV or an image (PNG, DICOM)", file: url.path)
    }

    static func folder(_ dir: URL) throws -> [ImageInput] {
        let base = dir.standardizedFileURL.path
        guard
            let e = FileManager.default.enumerator(
                at: dir, includingPropertiesForKeys: [.isRegularFileKey],
                options: [.skipsHiddenFiles])
        else {
            throw XRError("cannot list folder", file: dir.path)
        }
        var out: [ImageInput] = []
        for case let u as URL in e where imageExtensions.contains(u.pathExtension.lowercased()) {
            let p = u.standardizedFileURL.path
            let rel = p.hasPrefix(base + "/") ? String(p.dropFirst(base.count + 1)) : u.lastPathComponent
            out.append(ImageInput(url: u, id: rel))
        }
        out.sort { $0.id < $1.id }
        if out.isEmpty { throw XRError("no PNG or DICOM images found", file: dir.path) }
        return out
    }

    static func manifest(_ url: URL, column: String) throws -> [ImageInput] {
        let table = try CSVTable(contentsOf: url)
        let col = try table.column(column)
        let base = url.deletingLastPathComponent()
        var out: [ImageInput] = []
        for row in table.rows {
            let p = row[col]
            if p.isEmpty { continue }
            let u = p.hasPrefix("/") ? URL(fileURLWithPath: p) : base.appendingPathComponent(p)
            out.append(ImageInput(url: u, id: p))
        }
        if out.isEmpty { throw XRError("manifest lists no images", file: url.path, field: column) }
        return out
    }
}
