"""The conductor service (placeholder)."""
