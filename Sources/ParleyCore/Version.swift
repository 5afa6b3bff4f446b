/// Parley's release version, shown by every executable's `--version`.
public enum ParleyVersion {
    public static let string = "0.1.0"
}
