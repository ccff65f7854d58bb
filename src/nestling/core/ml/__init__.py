"""The machine-learning pieces: the Task interface, folds, scores, hyperparameter spaces."""
