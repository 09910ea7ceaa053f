// XRArchive module.
