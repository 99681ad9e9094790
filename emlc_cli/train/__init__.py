"""Training: warm-up, the meta step and evaluation (trainer.py, meta.py, tangents.py, eval_pass.py), the events
it yields (events.py), the frozen-backbone embedding pass (frozen.py), cross-fitting (cross_fit.py), its
checkpoints and --resume checks (checkpoints.py, resume.py). Docstring only: events.py must load without torch."""
