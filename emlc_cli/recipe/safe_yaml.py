"""Reading a recipe's YAML safely: no anchors or aliases (a 1 KB alias bomb expands to gigabytes), no deep
nesting, no duplicate keys, no file larger than a recipe can be. Every refusal is one RecipeError naming the line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from emlc_cli.errors import RecipeError

MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few hundred bytes; anything near this is not one
MAX_DEPTH = 16  # sections hold scalars: deeper nesting is never a valid recipe


class Refused(yaml.YAMLError):
    """A YAML construct recipes do not allow; `mark` says where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, mark


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases (a 1 KB alias bomb expands to gigabytes), deep nesting or duplicate keys."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise Refused("YAML anchors and aliases (&name, *name) are not allowed in recipes", event.start_mark)
        if self.depth >= MAX_DEPTH:
            raise Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise Refused(f"key '{short(key_node.value)}' appears twice in one mapping", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.load(_read_text(path), Loader=RecipeLoader)
    except Refused as err:
        raise RecipeError(f"{_at(err.mark)}{err.problem}", source=str(path)) from None
    except yaml.MarkedYAMLError as err:
        raise RecipeError(f"YAML syntax error at {_at(err.problem_mark)}{err.problem}", source=str(path)) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"cannot read: {short(str(err), 200)}", source=str(path)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError("the top level must be a mapping of sections", source=str(path))
    return raw


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RECIPE_BYTES + 1)
        if len(data) > MAX_RECIPE_BYTES:
            raise RecipeError(f"larger than {MAX_RECIPE_BYTES >> 20} MiB; a recipe is a short YAML file", source=str(path))
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read: {short(str(err), 200)}", source=str(path)) from None


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
