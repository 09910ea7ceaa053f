// XRModels module.
