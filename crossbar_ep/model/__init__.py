"""The network as mathematics: weight operators, the settle loop, EP and BP, optimisers, diagnostics (no files, no YAML, no device physics)."""
