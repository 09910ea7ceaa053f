// XRProbe module.
