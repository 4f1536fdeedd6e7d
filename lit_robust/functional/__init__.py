"""Pure tensor math shared by attacks and defenses (no Lightning)."""
