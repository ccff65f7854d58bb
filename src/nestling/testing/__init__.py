"""Helpers for nestling's own tests and benchmarks (as optuna.testing): never imported by nestling."""
