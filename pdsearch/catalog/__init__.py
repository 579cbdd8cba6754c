"""The light name tables of what later stages build: objectives, runtimes, samplers, schedulers, trackers.

Config validation reads them without importing torch, Ray or Optuna; each entry names its
heavy part by import path (as Ray Tune's ``SEARCH_ALG_IMPORT`` does), so a table here
points to no stage above it. Tables of the early stages live with them (``data.DATASETS``,
``models``, ``policy.ALLOCATORS``, ``policy.CRITERIA``).
"""
