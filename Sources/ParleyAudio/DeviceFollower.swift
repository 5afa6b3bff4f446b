/// Keeps one direction (microphone or speaker) on the sound-server device a person chose, sans
/// I/O: when that device fails or leaves the server's list (headset unplugged, server restarted),
/// the server's default stands in; when it is listed again, audio returns to it. The caller
/// opens what `Step` says (`AudioEngine.switchInput`/`switchOutput`, off any loop that must not
/// wait) and reports with `opened`; it feeds the server's device list about once a second.
public struct DeviceFollower: Sendable, Equatable {
    public enum Step: Sendable, Equatable {
        /// Open the server's default device in place of the missing chosen one.
        case openDefault
        /// Open the chosen device again.
        case openChosen
    }

    /// The chosen device's name; nil for the server's default.
    public private(set) var chosen: String?
    /// Whether the chosen device is missing and the default stands in (or nothing, while no
    /// device at all can be opened).
    public private(set) var fallenBack = false
    /// Whether a device is open and working now.
    public private(set) var working = true
    /// The step under way (one at a time).
    public private(set) var pending: Step?

    public init(chosen: String?) {
        self.chosen = chosen
    }

    /// The person chose another device, and it was opened.
    public mutating func chose(_ name: String?) {
        chosen = name
        fallenBack = false
        working = true
        pending = nil
    }

    /// The device in use failed (the engine plays on with silence in its place).
    public mutating func lost() -> Step? {
        working = false
        fallenBack = true
        guard pending == nil else { return nil }
        pending = .openDefault
        return .openDefault
    }

    /// What the server lists now (nil: it does not answer).
    public mutating func listed(_ names: Set<String>?) -> Step? {
        guard pending == nil, let names else { return nil }
        let step: Step?
        if let chosen {
            if names.contains(chosen) {
                step = fallenBack ? .openChosen : nil
            } else if !fallenBack || !working {
                // Gone from the list (a server may move our stream to its default by itself, or
                // fail it a moment later): stand in with the default, or retry it.
                fallenBack = true
                step = .openDefault
            } else {
                step = nil
            }
        } else {
            // The default itself failed (the server restarted): open it again once it answers.
            step = working ? nil : .openDefault
        }
        pending = step
        return step
    }

    /// How a step ended.
    public mutating func opened(_ step: Step, succeeded: Bool) {
        pending = nil
        if succeeded {
            working = true
            if step == .openChosen || chosen == nil { fallenBack = false }
        } else if step == .openDefault {
            working = false  // a chosen device that would not open leaves the default playing
        }
    }
}
