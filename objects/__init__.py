"""Versioned domain objects (placeholder; filled in by the objects work)."""
