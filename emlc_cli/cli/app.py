"""The Typer app. Every command runs through `guarded`: the one place an EmlcError becomes
one stderr line and exit code 2 (EMLC_DEBUG=1 shows the traceback instead)."""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable

import click
import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 carries its own copy of click; older versions raise click's exceptions
    from typer import _click as _typer_click

    _CLICK: tuple[Any, ...] = (click, _typer_click)
except ImportError:  # pragma: no cover
    _CLICK = (click,)
CLICK_ERRORS = tuple(m.exceptions.ClickException for m in _CLICK)
NO_ARGS = tuple(m.exceptions.NoArgsIsHelpError for m in _CLICK if hasattr(m.exceptions, "NoArgsIsHelpError"))
ABORTS = (*(m.exceptions.Abort for m in _CLICK if hasattr(m.exceptions, "Abort")), typer.Abort)

from emlc_cli._version import __version__
from emlc_cli.errors import DeviceError, EmlcError, has_secret, install_log_filter, redact
from emlc_cli.runtime.device import prints_errors, rank_prefix

# Loggers that, at DEBUG, write HTTP headers (the Hub token) verbatim: kept at WARNING even under EMLC_DEBUG.
THIRD_PARTY = ("urllib3", "httpx", "httpcore", "httpx2", "httpcore2", "huggingface_hub", "filelock", "fsspec",
               "datasets", "requests", "hpack", "h11", "h2", "asyncio", "trio", "PIL", "matplotlib")


class OneLineErrors(TyperGroup):
    """Usage errors (a missing option, a bad value) as one stderr line with exit code 2, not a panel."""

    def get_params(self, ctx: Any) -> list[Any]:
        from emlc_cli.cli.options import plain_flags

        return plain_flags(super().get_params(ctx))

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NO_ARGS as err:  # bare `emlc` / `emlc recipes`: the help, as before
            if not standalone_mode:
                raise
            err.show()
            sys.exit(err.exit_code)
        except CLICK_ERRORS as err:
            if not standalone_mode:
                raise
            from emlc_cli.cli import console

            console.error(usage_line(err))
            sys.exit(err.exit_code)
        except ABORTS:
            if not standalone_mode:
                raise
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def usage_line(err: Any) -> str:
    """`Missing option '--clean'. (see emlc clean --help)`: the message on one line, with where to look."""
    param = getattr(err, "param", None)
    if type(err).__name__ == "MissingParameter" and getattr(param, "opts", None):
        kind = "argument" if getattr(param, "param_type_name", "") == "argument" else "option"
        names = (param.metavar or str(param.name).upper()) if kind == "argument" else " / ".join(param.opts)
        line = f"missing {kind} {names}"
    else:
        line = override_hint(err) or " ".join(err.format_message().split())
    ctx = getattr(err, "ctx", None)
    if ctx is not None and err.exit_code == 2:
        line += f" (see {ctx.command_path} --help)"
    return redact(line)


WORKFLOWS = """[bold]Common workflows[/]

  emlc demo                                   # try it, offline
  emlc clean ./images --clean clean.csv       # correct: runs/images
  emlc review runs/images                     # look: review.html
  emlc clean ./images -c clean.csv -c decisions.csv -o runs/images-2
  emlc evaluate runs/images --truth truth.csv # score against truth
  emlc export runs/images ./images-clean      # a corrected copy
  emlc push runs/images --to ./cleaned        # Hub layout (--repo)

`emlc COMMAND --help` shows each command's options and examples."""

app = typer.Typer(name="emlc", help="Clean noisy labels with Enhanced Meta Label Correction.", cls=OneLineErrors,
                  no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False, epilog=WORKFLOWS)
recipes_app = typer.Typer(help="List, show and copy the shipped recipes.", no_args_is_help=True,
                          epilog="[bold]Examples[/]\n\n  emlc recipes list\n  emlc recipes show quick\n"
                                 "  emlc recipes copy quick my.yaml      # then: emlc clean DATA --clean CSV --recipe my.yaml")
cache_app = typer.Typer(help="List and remove the decoded images and embeddings kept for later runs (EMLC_CACHE_DIR).",
                        no_args_is_help=True, epilog="[bold]Examples[/]\n\n  emlc cache ls\n  emlc cache rm --all")


def override_hint(err: Any) -> str | None:
    """`--epochs 3` on a command that takes recipe overrides: name the override it meant (`train.epochs=3`)."""
    name, ctx = getattr(err, "option_name", None), getattr(err, "ctx", None)
    if type(err).__name__ != "NoSuchOption" or not name or ctx is None:
        return None
    if not any(p.name == "overrides" for p in ctx.command.params):
        return None
    from emlc_cli.recipe.schema import SECTIONS

    key = name.lstrip("-").replace("-", "_")
    matches = [f"{section}.{key}" for section, cls in SECTIONS.items() if key in cls.__dataclass_fields__]
    if not matches:
        return (f"no such option: {name}; recipe keys are not options but overrides after DATA, written "
                "section.key=value (e.g. train.epochs=3; `emlc recipes show NAME` lists them)")
    return (f"no such option: {name}; recipe keys are overrides after DATA, written section.key=value: "
            f"{' or '.join(m + '=VALUE' for m in matches)}")


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from emlc_cli.cli import console

        try:
            return command(*args, **kwargs)
        except EmlcError as err:
            if os.environ.get("EMLC_DEBUG"):
                raise
            if prints_errors():  # other ranks fail with the same message (see distributed.on_main / all_agree)
                console.error(rank_prefix() + err.one_line())
            raise typer.Exit(err.exit_code) from None
        except Exception as err:  # map device OOM to its fix; everything else is a bug and keeps its traceback
            _scrub(err)
            if type(err).__name__ != "OutOfMemoryError" or os.environ.get("EMLC_DEBUG"):
                raise
            console.error(rank_prefix() + DeviceError("out of memory on the device; lower train.batch_size / "
                                              "train.clean_batch_size or data.image_size").one_line())
            raise typer.Exit(2) from None

    return wrapper


def _scrub(err: BaseException) -> None:
    """An unexpected error keeps its traceback, but never a secret in its message."""
    if has_secret(repr(err.args)):
        err.args = tuple(redact(a) if isinstance(a, (str, bytes)) else a for a in err.args)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"emlc {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Show the version.")) -> None:
    configure_logging(bool(os.environ.get("EMLC_DEBUG")))


def configure_logging(debug: bool) -> None:
    """WARNING for everything, DEBUG for emlc's own loggers under EMLC_DEBUG; HTTP libraries stay at WARNING
    (at DEBUG they log request headers, the token among them), and every record passes a redacting filter."""
    from emlc_cli.cli.console import LogHandler  # records print as the console's own lines: `warning: ...`

    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, LogHandler)), None)
    if handler is None:
        handler = LogHandler()
        root.addHandler(handler)
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("emlc_cli").setLevel(logging.DEBUG if debug else logging.NOTSET)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    install_log_filter()


def _help(module: Any) -> dict[str, Any]:
    """Each command's usage line with plain placeholders, and its examples (the module's EXAMPLES) below its options."""
    from emlc_cli.cli.options import Command

    return {"cls": Command, "epilog": getattr(module, "EXAMPLES", None)}


def _register() -> None:
    from emlc_cli.cli import cache, clean, demo, evaluate, export, labelstudio, predict, push, recipes, review

    app.command("clean", **_help(clean))(guarded(clean.clean_command))
    app.command("evaluate", **_help(evaluate))(guarded(evaluate.evaluate_command))
    app.command("review", **_help(review))(guarded(review.review_command))
    app.command("demo", **_help(demo))(guarded(demo.demo_command))
    app.command("push", **_help(push))(guarded(push.push_command))
    app.command("export", **_help(export))(guarded(export.export_command))
    app.command("predict", **_help(predict))(guarded(predict.predict_command))
    app.command("label-studio", **_help(labelstudio))(guarded(labelstudio.label_studio_command))
    recipes_app.command("list", **_help(recipes))(guarded(recipes.list_command))
    recipes_app.command("show", **_help(recipes))(guarded(recipes.show_command))
    recipes_app.command("copy", **_help(recipes))(guarded(recipes.copy_command))
    app.add_typer(recipes_app, name="recipes")
    cache_app.command("ls", **_help(cache))(guarded(cache.ls_command))
    cache_app.command("rm", **_help(cache))(guarded(cache.rm_command))
    app.add_typer(cache_app, name="cache")


_register()


def main() -> None:
    app()
