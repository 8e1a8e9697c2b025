"""Circuit level: nodal and transfer solvers, IR-drop maps, device I-V laws, SPICE writers."""
