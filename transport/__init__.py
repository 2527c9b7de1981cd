"""RPC over a message broker (placeholder)."""
