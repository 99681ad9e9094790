"""The recipe: its schema, validated in one pass (schema.py), read from YAML safely (safe_yaml.py). Docstring only."""
