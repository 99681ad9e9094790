"""The trained student on new data: evaluate it on a labeled set (evaluation.py), predict labels for new images
(inference.py). Docstring only."""
