import XCTest
import Foundation
@testable import XRText
import XRData
import TestSupport

final class CheXpertLabelerTests: XCTestCase {
    func expect(_ report: String, _ want: [String: FindingLabel], file: StaticString = #filePath, line: UInt = #line) {
        let got = CheXpertLabeler.label(report)
        for (f, l) in want { XCTAssertEqual(got[f], l, "\(f) in: \(report)", file: file, line: line) }
    }

    func testMentionsNegationAndUncertainty() {
        expect("The heart is enlarged. Small right pleural effusion.", ["Cardiomegaly": .positive, "Pleural Effusion": .positive, "No Finding": .negative])
        expect("No pleural effusion or pneumothorax.", ["Pleural Effusion": .negative, "Pneumothorax": .negative, "No Finding": .positive])
        expect("No acute cardiopulmonary abnormality.", ["No Finding": .positive, "Cardiomegaly": .unmentioned])
        expect(
            "Without focal consolidation, effusion, or pneumothorax.", ["Consolidation": .negative, "Pleural Effusion": .negative, "Pneumothorax": .negative])
        expect("Negative for pneumonia.", ["Pneumonia": .negative])
        expect("Lungs are free of consolidation.", ["Consolidation": .negative])
        expect("Pneumothorax is not seen.", ["Pneumothorax": .negative])
        expect("The previously seen effusion has resolved.", ["Pleural Effusion": .negative])
        expect(
            "Left basilar opacity may represent atelectasis or pneumonia.",
            ["Lung Opacity": .uncertain, "Atelectasis": .uncertain, "Pneumonia": .uncertain, "No Finding": .negative])
        expect("Cannot exclude a small pneumothorax.", ["Pneumothorax": .uncertain])
        expect("Findings suggestive of mild pulmonary edema.", ["Edema": .uncertain])
        expect("Possible early pneumonia in the left lower lobe.", ["Pneumonia": .uncertain])
        expect("No pneumothorax. There is a moderate right effusion.", ["Pneumothorax": .negative, "Pleural Effusion": .positive])
        expect("No pneumothorax, but there is mild cardiomegaly.", ["Pneumothorax": .negative, "Cardiomegaly": .positive])
        expect("Stable 3 cm nodule in the left upper lobe.", ["Lung Lesion": .positive])
        expect("Widened mediastinum.", ["Enlarged Cardiomediastinum": .positive])
        expect("Bilateral pleural thickening.", ["Pleural Other": .positive])
        expect("Healed right rib fractures.", ["Fracture": .positive])
        expect("Endotracheal tube tip is 4 cm above the carina. No acute disease.", ["Support Devices": .positive, "No Finding": .positive])
        expect("Right lower lobe consolidation.", ["Consolidation": .positive])
        expect("Mild bibasilar atelectasis.", ["Atelectasis": .positive])
        expect("Pulmonary vascular congestion.", ["Edema": .positive])
    }

    func testEfficacy() {
        let refs = ["Small right pleural effusion.", "Cardiomegaly. No effusion.", "No acute disease."]
        let perfect = CheXpertLabeler.efficacy(generated: refs, references: refs)
        XCTAssertEqual(perfect.micro.f1, 1)
        let gen = ["No pleural effusion.", "Cardiomegaly with small effusion.", "No acute disease."]
        let e = CheXpertLabeler.efficacy(generated: gen, references: refs)
        // Positives: refs {Effusion(0), Cardiomegaly(1), No Finding(2)}; generated {No Finding(0), Cardiomegaly(1), Effusion(1), No Finding(2)}.
        XCTAssertEqual(e.micro.precision, 2.0 / 4.0, accuracy: 1e-12)
        XCTAssertEqual(e.micro.recall, 2.0 / 3.0, accuracy: 1e-12)
        XCTAssertEqual(e.perFinding["Cardiomegaly"]?.f1, 1)
        XCTAssertEqual(e.perFinding["Pleural Effusion"]?.recall, 0)
    }

    /// On the 1,000 real IU reports, against their own MeSH labels: reports labelled "normal" should
    /// read as No Finding, and a MeSH finding that maps to a CheXpert one should be found
    /// (positive or uncertain) in the report text.
    func testRealReportsWhenPresent() throws {
        let shared = try Fixtures.requireSharedData()
        let table = try CSVTable(contentsOf: shared.appendingPathComponent("reports_text_only.csv"))
        let labels = try table.column("labels"), findings = try table.column("findings"), impression = try table.column("impression")
        let mesh: [String: String] = [
            "Cardiomegaly": "Cardiomegaly", "Pleural Effusion": "Pleural Effusion", "Pneumothorax": "Pneumothorax",
            "Pulmonary Atelectasis": "Atelectasis", "Atelectasis": "Atelectasis", "Edema": "Edema", "Pulmonary Edema": "Edema",
            "Consolidation": "Consolidation", "Pneumonia": "Pneumonia", "Nodule": "Lung Lesion", "Mass": "Lung Lesion",
            "Fractures, Bone": "Fracture", "Opacity": "Lung Opacity", "Airspace Disease": "Lung Opacity"
        ]
        var normal = 0, normalAgree = 0, mapped = 0, found = 0
        for row in table.rows {
            let l = CheXpertLabeler.label(row[findings] + " " + row[impression])
            if row[labels] == "normal" {
                normal += 1
                if l["No Finding"] == .positive { normalAgree += 1 }
            }
            let heads = Set(row[labels].split(separator: "|").map { String($0.split(separator: "/").first ?? "") })
            for (m, f) in mesh where heads.contains(m) {
                mapped += 1
                if l[f]! >= .uncertain { found += 1 }
            }
        }
        let a = Double(normalAgree) / Double(normal), b = Double(found) / Double(mapped)
        print(
            String(
                format: "IU reports: %d/%d MeSH-normal read as No Finding (%.3f); %d/%d mapped MeSH findings found (%.3f)", normalAgree, normal, a, found,
                mapped, b))
        XCTAssertGreaterThan(normal, 200)
        XCTAssertGreaterThan(a, 0.95)
        XCTAssertGreaterThan(mapped, 50)
        XCTAssertGreaterThan(b, 0.8)
    }
}
