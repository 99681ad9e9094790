"""The networks: the table of backbones by name and their traits (backbones.py, torch-free), the ones emlc
defines (nets.py), and the teacher/student builder (build.py). Docstring only, so the table loads without torch."""
