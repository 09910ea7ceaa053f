// Clinical efficacy of generated reports: a rule-based extractor of the 14 CheXpert findings
// (mention phrases, negation and uncertainty cues scoped to the clause), and precision / recall
// / F1 of generated against reference labels with uncertain and unmentioned counted as negative
// (the usual convention).
import Foundation

public enum FindingLabel: Int, Codable, Sendable, Comparable {
    case unmentioned = 0, negative = 1, uncertain = 2, positive = 3
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

public enum CheXpertLabeler {
    public static let findings = [
        "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
        "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
        "Fracture", "Support Devices"
    ]

    /// Mention phrases (lower case, matched on word boundaries) per finding.
    static let mentions: [String: [String]] = [
        "Enlarged Cardiomediastinum": [
            "enlarged cardiomediastinum", "cardiomediastinal enlargement", "widened mediastinum", "mediastinal widening",
            "enlarged mediastinum", "mediastinal enlargement", "enlarged cardiomediastinal silhouette", "widening of the mediastinum"
        ],
        "Cardiomegaly": [
            "cardiomegaly", "enlarged heart", "heart is enlarged", "heart size is enlarged", "enlarged cardiac silhouette",
            "cardiac silhouette is enlarged", "cardiac enlargement", "enlargement of the cardiac silhouette", "heart size is increased",
            "enlarged heart size", "heart is mildly enlarged", "heart is moderately enlarged", "heart is severely enlarged"
        ],
        "Lung Opacity": [
            "opacity", "opacities", "opacification", "opacifications", "infiltrate", "infiltrates", "infiltration", "airspace disease",
            "air space disease", "haziness", "hazy", "airspace process", "reticular markings", "interstitial markings"
        ],
        "Lung Lesion": ["nodule", "nodules", "nodular", "mass", "masses", "lesion", "lesions", "tumor", "neoplasm", "carcinoma", "cavitary"],
        "Edema": ["edema", "vascular congestion", "pulmonary congestion", "vascular engorgement", "congestive heart failure", "chf", "fluid overload"],
        "Consolidation": ["consolidation", "consolidations", "consolidative", "consolidated"],
        "Pneumonia": ["pneumonia", "pneumonias", "pneumonitis", "infectious process", "infection"],
        "Atelectasis": ["atelectasis", "atelectases", "atelectatic", "collapse", "volume loss"],
        "Pneumothorax": ["pneumothorax", "pneumothoraces", "hydropneumothorax"],
        "Pleural Effusion": [
            "pleural effusion", "pleural effusions", "effusion", "effusions", "pleural fluid", "hydropneumothorax",
            "blunting of the costophrenic", "blunted costophrenic", "costophrenic angle blunting"
        ],
        "Pleural Other": [
            "pleural thickening", "pleural scarring", "fibrothorax", "pleural plaque", "pleural plaques", "pleural calcification",
            "pleural based", "pleural-based"
        ],
        "Fracture": ["fracture", "fractures", "fractured"],
        "Support Devices": [
            "tube", "tubes", "line", "lines", "catheter", "catheters", "pacemaker", "pacer", "device", "devices", "valve",
            "stent", "stents", "drain", "drains", "picc", "port-a-cath", "wires", "sternotomy", "hardware", "clips", "leads", "defibrillator"
        ]
    ]

    /// Uncertainty that wins over negation words inside it ("cannot exclude", "not be ruled out").
    static let strongUncertain = [
        "cannot exclude", "can not exclude", "cannot be excluded", "can not be excluded", "not excluded", "cannot rule out",
        "can not rule out", "not be ruled out", "cannot be ruled out", "not entirely excluded", "not be excluded"
    ]
    /// Cues that make a mention uncertain (after negation: "no opacity to suggest pneumonia" is negative).
    static let uncertain = [
        "may", "might", "could", "possible", "possibly", "probable",
        "probably", "likely", "questionable", "question of", "suspicious", "suspected", "suspect", "concerning for", "concern for",
        "suggestive", "suggest", "suggests", "suggesting", "versus", "vs", "differential", "equivocal", "borderline", "consider",
        "represent", "represents", "raise the possibility", "raises the possibility", "indeterminate"
    ]
    /// Cues before a mention that negate it within the clause.
    static let negationBefore = [
        "no", "not", "without", "negative for", "free of", "clear of", "absence of", "absent", "resolution of",
        "resolved", "interval removal of", "removal of", "no evidence of", "no new", "no longer", "rather than", "ruled out", "nor"
    ]
    /// Cues after a mention that negate it within the clause.
    static let negationAfter = [
        "not seen", "not identified", "not present", "not visualized", "not evident", "not appreciated", "not demonstrated",
        "not detected", "is absent", "are absent", "has resolved", "have resolved", "resolved", "is removed", "has been removed",
        "have been removed", "are not seen", "is not seen", "is gone", "no longer seen", "within normal limits",
        "within limits of normal", "within the limits of normal", "within normal", "is normal", "are normal",
        "appear normal", "appears normal", "is unremarkable", "are unremarkable"
    ]
    static let boundaries: Set<String> = [".", ";", ":", "but", "however", "although", "though", "which", "except", "otherwise"]

    /// Label every finding of one report.
    public static func label(_ report: String) -> [String: FindingLabel] {
        var out = Dictionary(uniqueKeysWithValues: findings.map { ($0, FindingLabel.unmentioned) })
        for clause in clauses(report) {
            let text = " " + clause.joined(separator: " ") + " "
            for (finding, phrases) in mentions {
                for p in phrases {
                    var search = text.startIndex..<text.endIndex
                    while let r = text.range(of: " \(p) ", range: search) {
                        let before = String(text[text.startIndex..<r.lowerBound]) + " ", after = " " + String(text[r.upperBound...])
                        let l = classify(before: before, after: after, phrase: p)
                        if l > out[finding]! { out[finding] = l }
                        search = text.index(before: r.upperBound)..<text.endIndex
                    }
                }
            }
        }
        // "No Finding": nothing except support devices positive or uncertain.
        let other = findings.filter { $0 != "No Finding" && $0 != "Support Devices" }
        out["No Finding"] = other.contains { out[$0]! >= .uncertain } ? .negative : .positive
        return out
    }

    static func classify(before: String, after: String, phrase: String) -> FindingLabel {
        let window = before + phrase + after
        if strongUncertain.contains(where: { window.contains(" \($0) ") }) { return .uncertain }
        if negationBefore.contains(where: { before.contains(" \($0) ") }) { return .negative }
        if uncertain.contains(where: { window.contains(" \($0) ") }) { return .uncertain }
        if negationAfter.contains(where: { after.contains(" \($0) ") }) { return .negative }
        // "atelectasis or pneumonia": alternatives are uncertain.
        if before.hasSuffix(" or ") || after.hasPrefix(" or ") || before.hasSuffix(" versus ") || after.hasPrefix(" versus ") { return .uncertain }
        return .positive
    }

    /// Lower-cased word tokens split into clauses at sentence and clause boundaries.
    static func clauses(_ report: String) -> [[String]] {
        var out: [[String]] = [], cur: [String] = []
        var word = ""
        func flushWord() {
            guard !word.isEmpty else { return }
            if boundaries.contains(word) { if !cur.isEmpty { out.append(cur) }; cur = [] } else { cur.append(word) }
            word = ""
        }
        for ch in report.lowercased() {
            if ch.isLetter || ch.isNumber || ch == "-" || ch == "'" {
                word.append(ch)
            } else if ch == "." || ch == ";" || ch == ":" || ch == "?" || ch == "!" {
                flushWord()
                if !cur.isEmpty { out.append(cur) }
                cur = []
            } else {
                flushWord()
            }
        }
        flushWord()
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    /// Precision, recall and F1 of generated against reference labels (positive = 1; uncertain
    /// and unmentioned = 0), micro-averaged over all findings and reports, and per finding.
    public struct Efficacy: Codable, Sendable, Equatable {
        public struct PRF: Codable, Sendable, Equatable {
            public var precision: Double; public var recall: Double; public var f1: Double; public var support: Int
        }
        public var micro: PRF
        public var perFinding: [String: PRF]
        public var macroF1: Double
    }

    public static func efficacy(generated: [String], references: [String]) -> Efficacy {
        precondition(generated.count == references.count)
        let g = generated.map(label), r = references.map(label)
        func prf(_ pairs: [(Bool, Bool)]) -> Efficacy.PRF {
            let tp = pairs.filter { $0.0 && $0.1 }.count, fp = pairs.filter { $0.0 && !$0.1 }.count, fn = pairs.filter { !$0.0 && $0.1 }.count
            let p = tp + fp == 0 ? 0 : Double(tp) / Double(tp + fp), rc = tp + fn == 0 ? 0 : Double(tp) / Double(tp + fn)
            return .init(precision: p, recall: rc, f1: p + rc == 0 ? 0 : 2 * p * rc / (p + rc), support: tp + fn)
        }
        var per: [String: Efficacy.PRF] = [:], all: [(Bool, Bool)] = []
        for f in findings {
            let pairs = zip(g, r).map { ($0[f] == .positive, $1[f] == .positive) }
            per[f] = prf(pairs)
            all += pairs
        }
        return Efficacy(micro: prf(all), perFinding: per, macroF1: findings.map { per[$0]!.f1 }.reduce(0, +) / Double(findings.count))
    }
}
