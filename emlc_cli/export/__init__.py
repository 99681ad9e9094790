"""A run's labels out to other tools: a corrected image folder (image_folder.py), Label Studio tasks and its
export read back (label_studio.py), FiftyOne (fiftyone.py), CVAT (cvat.py), the Hub (hub.py, card.py).
Docstring only."""
