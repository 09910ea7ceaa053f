// XRKernels module.
