"""The run folder: its format (layout.py: file names, columns, readers; torch-free), its atomic writer
(writer.py), the staging lock (locks.py), a full disk as one line (disk.py) and the run log (log.py).
Docstring only."""
