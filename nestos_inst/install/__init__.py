"""install package."""
