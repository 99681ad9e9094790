"""The Typer app. Every command runs through `guarded`: the one place an EmlcError becomes
one stderr line and exit code 2 (EMLC_DEBUG=1 shows the traceback instead)."""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

import typer

from emlc_cli import __version__
from emlc_cli.errors import DeviceError, EmlcError

app = typer.Typer(name="emlc", help="Clean noisy labels with Enhanced Meta Label Correction.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
recipes_app = typer.Typer(help="List, show and copy the shipped recipes.", no_args_is_help=True)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from emlc_cli import console

        try:
            return command(*args, **kwargs)
        except EmlcError as err:
            if os.environ.get("EMLC_DEBUG"):
                raise
            if _main_process():  # other ranks fail with the same message (see distributed.on_main / all_agree)
                console.error(err.one_line())
            raise typer.Exit(err.exit_code) from None
        except Exception as err:  # map device OOM to its fix; everything else is a bug and keeps its traceback
            if type(err).__name__ != "OutOfMemoryError" or os.environ.get("EMLC_DEBUG"):
                raise
            where = "" if _main_process() else f"rank {os.environ['RANK']}: "
            console.error(where + DeviceError("out of memory on the device; lower train.batch_size / "
                                              "train.clean_batch_size or data.image_size").one_line())
            raise typer.Exit(2) from None

    return wrapper


def _main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain run (read from the environment: no torch import on this path)."""
    return os.environ.get("RANK", "0") == "0"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"emlc {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version.")) -> None:
    level = logging.DEBUG if os.environ.get("EMLC_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from emlc_cli.cli import clean, demo, evaluate, export, push, recipes, review

    app.command("clean")(guarded(clean.clean_command))
    app.command("evaluate")(guarded(evaluate.evaluate_command))
    app.command("review")(guarded(review.review_command))
    app.command("demo")(guarded(demo.demo_command))
    app.command("push")(guarded(push.push_command))
    app.command("export")(guarded(export.export_command))
    recipes_app.command("list")(guarded(recipes.list_command))
    recipes_app.command("show")(guarded(recipes.show_command))
    recipes_app.command("copy")(guarded(recipes.copy_command))
    app.add_typer(recipes_app, name="recipes")


_register()


def main() -> None:
    app()
