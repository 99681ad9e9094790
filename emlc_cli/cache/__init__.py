"""Decoded images: decode once (decode.py), into one uint8 tensor (images.py), kept in the persistent store
(store.py, torch-free), served in augmented batches (batches.py). Docstring only."""
