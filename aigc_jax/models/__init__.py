"""Pure Flax linen modules, one family per file."""
