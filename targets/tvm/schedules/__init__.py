"""Hand schedule templates, one module per kernel family and target."""
