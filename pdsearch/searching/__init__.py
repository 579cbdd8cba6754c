"""The search: the driver, the Optuna/Tune searcher, samplers, schedulers, trials.csv recording,
progress output and the Ray connection. Nothing is imported here, so the light registries
(samplers, schedulers) load without Ray or Optuna."""
