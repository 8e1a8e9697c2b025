"""The crossbar-array weight operator: signed mappings, periphery, pulse rules, energy."""
