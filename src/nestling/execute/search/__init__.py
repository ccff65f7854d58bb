"""Adaptive search whose study is the tree: draws, trial states, pruners."""
