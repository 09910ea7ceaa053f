// XRRecipes module.
