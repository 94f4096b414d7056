"""History that lasts: `nerve recorder` keeps every measurement in tiers under the data directory (docs/history.md)."""
