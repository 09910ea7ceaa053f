// XRData module.
