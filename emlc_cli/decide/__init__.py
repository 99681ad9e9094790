"""The decision: from probabilities to labels (rules.py), checked on the verified holdout (evidence.py), driven
round by round (decision.py). Docstring only."""
