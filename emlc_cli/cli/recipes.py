"""`emlc recipes list | show NAME | copy NAME DEST`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from emlc_cli.errors import OutputError


def list_command() -> None:
    """List the shipped recipes: what each does, downloads and costs."""
    from emlc_cli.cli import console
    from emlc_cli.prepare.advice import downloads, recipe_cost
    from emlc_cli.recipe.schema import builtin_recipe_names, load_recipe, recipe_path

    for name in builtin_recipe_names():
        recipe = load_recipe(name)
        console.text(f"{name:<20} {recipe.description}")
        console.text(f"{'':<20}   downloads: {downloads(recipe.model.backbone, recipe.model.weights)}")
        cost = recipe_cost(recipe_path(name))
        if cost:
            console.text(f"{'':<20}   cost: {cost}")


def show_command(name: Annotated[str, typer.Argument(metavar="NAME", help="Recipe name or path.")]) -> None:
    """Print a recipe as shipped."""
    from emlc_cli.cli import console
    from emlc_cli.recipe.schema import recipe_path

    console.text(recipe_path(name).read_text(encoding="utf-8").rstrip())


def copy_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Recipe name.")],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Where to write the copy.")],
) -> None:
    """Copy a shipped recipe to edit it."""
    from emlc_cli.cli import console
    from emlc_cli.recipe.schema import recipe_path

    from emlc_cli.run_folder.disk import write_atomic

    if os.path.lexists(dest):  # a dangling symlink too: copying through it would write wherever it points
        raise OutputError(f"{dest} already exists; choose another name")
    write_atomic(dest, recipe_path(name).read_bytes())
    console.text(f"wrote {dest}")
