"""Shipped defaults of the risk config: one TOML table per area, the spec's values with their sources."""
