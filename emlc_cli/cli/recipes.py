"""`emlc recipes list | show NAME | copy NAME DEST`."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from emlc_cli.errors import OutputError


def list_command() -> None:
    """List the shipped recipes: what each does, downloads and costs."""
    from emlc_cli import console
    from emlc_cli.advice import downloads, recipe_cost
    from emlc_cli.recipe import builtin_recipe_names, load_recipe, recipe_path

    for name in builtin_recipe_names():
        recipe = load_recipe(name)
        console.text(f"{name:<20} {recipe.description}")
        console.text(f"{'':<20}   downloads: {downloads(recipe.model.backbone, recipe.model.weights)}")
        cost = recipe_cost(recipe_path(name))
        if cost:
            console.text(f"{'':<20}   cost: {cost}")


def show_command(name: Annotated[str, typer.Argument(metavar="NAME", help="Recipe name or path.")]) -> None:
    """Print a recipe as shipped."""
    from emlc_cli import console
    from emlc_cli.recipe import recipe_path

    console.text(recipe_path(name).read_text(encoding="utf-8").rstrip())


def copy_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Recipe name.")],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Where to write the copy.")],
) -> None:
    """Copy a shipped recipe to edit it."""
    from emlc_cli import console
    from emlc_cli.recipe import recipe_path

    if dest.exists():
        raise OutputError(f"{dest} already exists; choose another name")
    shutil.copyfile(recipe_path(name), dest)
    console.text(f"wrote {dest}")
