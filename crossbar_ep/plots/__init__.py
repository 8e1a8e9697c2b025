"""Figures: curves, traces, sweeps, device responses."""
