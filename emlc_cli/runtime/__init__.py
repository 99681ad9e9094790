"""Where the work runs: the device and seeds (device.py), every collective (distributed.py), the phase timer
(timing.py). Docstring only."""
