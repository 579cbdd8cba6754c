"""The run directory: its files and how they are read back, its lock, the Pareto front and hypervolume."""
