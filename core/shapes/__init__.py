"""The synthetic shapes world (scenes with exact ground truth), its toy model and the evaluations on it."""
