"""Training runs with run directories and checkpoints, compare, sweeps, netlist export."""
