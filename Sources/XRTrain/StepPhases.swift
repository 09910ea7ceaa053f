// Wall-clock time per named phase of a training step (`xrlab bench report --phases`): each
// `lap(name)` charges the time since the previous lap to `name`, so consecutive laps split the
// step into phases with no gaps. Phases that recur (every layer) accumulate under one name.
import Foundation

/// Accumulated wall-clock seconds per phase, in the order the phases first occurred.
public final class StepPhases: @unchecked Sendable {
    /// Phase names in the order they first occurred.
    public private(set) var names: [String] = []
    /// Seconds per phase, summed over every lap charged to it.
    public private(set) var seconds: [String: Double] = [:]
    private var last = DispatchTime.now().uptimeNanoseconds

    public init() {}

    /// Starts the clock without charging anything (the start of a step).
    public func start() { last = DispatchTime.now().uptimeNanoseconds }

    /// Charges the time since the previous lap (or `start`) to `name`.
    public func lap(_ name: String) {
        let now = DispatchTime.now().uptimeNanoseconds
        if seconds[name] == nil { names.append(name) }
        seconds[name, default: 0] += Double(now &- last) / 1e9
        last = now
    }

    /// The sum over every phase.
    public var total: Double { seconds.values.reduce(0, +) }
}
