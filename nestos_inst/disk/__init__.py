"""disk package."""
