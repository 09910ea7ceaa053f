/// The xrlab version, written into every run directory and file format xrlab produces.
public enum XRLabVersion {
    public static let string = "0.1.0"
}
