// XRPipeline module.
