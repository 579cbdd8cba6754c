"""One trial: the baseline it starts from, allocation and pruning, screening, fine-tuning and what it measures;
the baseline's sensitivity profile (measured once per run, read by trials)."""
