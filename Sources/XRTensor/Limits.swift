// Resource limits on what input files may ask for, in one place. Each is generous for real use and
// finite, so a hostile or corrupt file gets a clean, named error instead of a crash, an endless
// loop or an allocation of many gigabytes. docs/reliability.md lists them with their defaults.
import Foundation

/// Upper bounds on sizes and counts read from files (recipes, packages, tensors).
public enum Limits {
    // MARK: YAML (recipes)

    /// Deepest nesting of lists / mappings in a recipe (real recipes nest about 5 deep).
    public static let yamlDepth = 64
    /// Most YAML nodes in a recipe, counting each alias as the nodes it repeats (real recipes
    /// hold a few hundred; this leaves room for a 100,000-long list to be refused by its key).
    public static let yamlNodes = 250_000

    // MARK: recipe counts (everything that multiplies into the plan)

    /// Bounds on recipe counts, by recipe key. `validate` and `plan` refuse larger values.
    public enum Recipe {
        /// `seeds`: repetitions of each few-shot draw.
        public static let seeds = 1_000
        /// Entries in `shots` (distinct shot counts).
        public static let shotCounts = 100
        /// Largest single shot count (labelled examples per class, or training reports).
        public static let shotValue = 1_000_000
        /// Entries in a hyperparameter grid list (`k`, `C`).
        public static let gridValues = 100
        /// Largest `k` of the kNN probe.
        public static let knnK = 100_000
        /// `bootstrap` resamples.
        public static let bootstrap = 100_000
        /// Training epochs (`methods[].epochs`, `report.epochs`).
        public static let epochs = 10_000
        /// Cross-validation folds, patience, validation images per class, accumulation steps.
        public static let smallCount = 1_000
        /// Batch sizes, hidden widths, LoRA rank, adapter width, decoder width and vocabulary.
        public static let width = 1_000_000
        /// Image side in pixels (`model.preprocessing.size` / `crop`).
        public static let imageSide = 16_384
        /// Entries in the list keys `methods`, `representation`, `metrics`, `labels`, `targets`, `bins`, `where` values.
        public static let listEntries = 10_000
        /// Cells of the whole plan: shots × seeds × methods × their grids (× labels for tuning methods).
        public static let planCells = 1_000_000
    }

    // MARK: packages (.xrpkg)

    /// Entries in one package archive.
    public static let packageEntries = 10_000
    /// Largest uncompressed size of one package entry (4 GiB).
    public static let packageEntryBytes: Int64 = 4 << 30
    /// Largest uncompressed size of a whole package (8 GiB).
    public static let packageBytes: Int64 = 8 << 30
    /// Largest entry held in memory while reading a package (manifest, model card, checksums,
    /// head tensors, recipe); bigger entries are only streamed (hashed or written to disk).
    public static let packageInMemoryEntryBytes = 64 << 20

    // MARK: METEOR resources

    /// Largest entry read from the METEOR jar (word lists, synsets; the real ones are a few MB).
    public static let meteorEntryBytes = 64 << 20
    /// Longest line of the gzip paraphrase table (its lines are short phrases).
    public static let textLineBytes = 1 << 20

    // MARK: tensors

    /// The element count of `shape`, or nil when a dimension is negative or the product
    /// overflows `Int` (a shape read from a file must be checked before anything is allocated).
    public static func elementCount(_ shape: [Int]) -> Int? {
        if shape.contains(where: { $0 < 0 }) { return nil }
        if shape.contains(0) { return 0 }
        var n = 1
        for d in shape {
            let (p, o) = n.multipliedReportingOverflow(by: d)
            if o { return nil }
            n = p
        }
        return n
    }

    /// `shape`'s byte size at `bytesPerElement`, or nil on overflow.
    public static func byteCount(_ shape: [Int], bytesPerElement: Int) -> Int? {
        guard let n = elementCount(shape) else { return nil }
        let (b, o) = n.multipliedReportingOverflow(by: bytesPerElement)
        return o ? nil : b
    }
}
