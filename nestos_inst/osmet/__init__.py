"""osmet package."""
