"""`emlc clean DATA --clean clean.csv`: parse, validate (before torch is imported), call api.run_checked (what
emlc_cli.clean calls too), print."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from emlc_cli.cli.options import (DATA, DEVICES, FLAG, OUTPUTS, RECIPE, RUN, VERIFIED, DeviceOpt, JsonOpt, OverridesArg,
                                  QuietOpt, SeedOpt)
from emlc_cli.cli.source_options import (ConfigOpt, DataArg, FeatureColumnOpt, IdColumnOpt, ImageColumnOpt, LabelColumnOpt,
                                         RevisionOpt, SplitOpt, StreamOpt, build_spec, command_line)

if TYPE_CHECKING:
    from emlc_cli.runtime.nodes import Nodes

EXAMPLES = """[bold]Examples[/]

  emlc clean ./images --clean clean.csv            # writes runs/images
  emlc clean ./images --clean clean.csv --dry-run  # check it all first
  emlc clean ./images -c clean.csv --recipe quick train.epochs=5 -o runs/a
  emlc clean ./images -c clean.csv -c decisions.csv -o runs/b  # next round
  emlc clean ./images -c clean.csv -o runs/a --resume   # after Ctrl-C
  emlc clean hf://owner/name --split train -c clean.csv   # id,label rows

Recipe keys are not options: give them after DATA as section.key=value (train.epochs=5); `emlc recipes show quick` lists them."""


def clean_command(
    ctx: typer.Context,
    data: DataArg,
    clean: Annotated[list[Path], typer.Option("--clean", "-c", metavar="CSV", rich_help_panel=VERIFIED, show_default=False,
                                              help="Verified subset: CSV path,label (id,label for datasets); repeat it to "
                                                   "combine several.")],
    overrides: OverridesArg = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", metavar="CSV", rich_help_panel=DATA, show_default=False,
                                                   help="CSV path,label giving the labels of a flat folder; CSV label[,id] "
                                                        "for a .npy file.")] = None,
    config: ConfigOpt = None,
    split: SplitOpt = None,
    revision: RevisionOpt = None,
    image_column: ImageColumnOpt = None,
    label_column: LabelColumnOpt = "label",
    id_column: IdColumnOpt = None,
    feature_column: FeatureColumnOpt = None,
    stream: StreamOpt = False,
    recipe: Annotated[Optional[str], typer.Option("--recipe", "-r", metavar="NAME|FILE", rich_help_panel=RECIPE,
                                                  show_default=False,
                                                  help="Shipped recipe name (`emlc recipes list`) or a YAML file. "
                                                       "\\[default: frozen if its backbone is cached, else default; "
                                                       "features with --feature-column]")] = None,
    seed: SeedOpt = 0,
    resume: Annotated[bool, typer.Option("--resume", metavar=FLAG, rich_help_panel=RUN,
                                         help="Continue an interrupted run into the same --out.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", metavar=FLAG, rich_help_panel=RUN,
                                          help="Check the recipe, device, data, manifests and --out, print the resolved "
                                               "recipe; train nothing.")] = False,
    strict: Annotated[bool, typer.Option("--strict", metavar=FLAG, rich_help_panel=RUN,
                                         help="Fail on the first unreadable image instead of skipping it.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", rich_help_panel=OUTPUTS, show_default=False,
                                                help="Run folder to create. \\[default: runs/NAME, NAME from DATA]")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar=FLAG, rich_help_panel=OUTPUTS,
                                            help="Replace an existing run folder (only one emlc wrote).")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    nproc: Annotated[int, typer.Option("--nproc", metavar="N", min=1, rich_help_panel=DEVICES,
                                       help="Processes on this machine (one per GPU, or CPU shares); runs torchrun "
                                            "for you.")] = 1,
    nnodes: Annotated[int, typer.Option("--nnodes", metavar="N", min=1, rich_help_panel=DEVICES,
                                        help="Machines, each running the same command with its own copy of DATA; "
                                             "needs --rdzv-endpoint.")] = 1,
    rdzv_endpoint: Annotated[Optional[str], typer.Option("--rdzv-endpoint", metavar="HOST:PORT", rich_help_panel=DEVICES,
                                                         show_default=False,
                                                         help="Where the machines meet: one machine's address and a "
                                                              "port free there, the same on every machine.")] = None,
    local_addr: Annotated[Optional[str], typer.Option("--local-addr", metavar="ADDR", rich_help_panel=DEVICES,
                                                      show_default=False,
                                                      help="This machine's address as the others reach it, where its "
                                                           "host name resolves to another.")] = None,
) -> None:
    """Train EMLC on DATA and write corrected labels, checkpoints, a summary and a log to --out."""
    from emlc_cli.cli import console
    from emlc_cli.prepare import preflight
    from emlc_cli.runtime.device import is_main_process, launched
    from emlc_cli.runtime.nodes import check_nodes

    nodes = check_nodes(nnodes, rdzv_endpoint, local_addr)
    launches = (nproc > 1 or nodes.count > 1) and not launched()  # under torchrun already: this is a worker
    spec = build_spec(data, labels, config, split, revision, image_column, label_column, id_column, feature_column,
                      command=command_line(ctx), stream=stream)
    checked = preflight.check_clean(spec, clean, recipe, overrides or [], out, device, seed, overwrite, resume,
                                    rank_unknown=launches and nodes.count > 1)
    if checked.note and not quiet and not launches and is_main_process():  # once, by the process that trains
        console.note(checked.note)
    if dry_run:
        _dry_run(checked, device)
        return
    if launches:
        raise typer.Exit(_launch(nproc, nodes, device))
    from emlc_cli import api  # torch: only once the inputs are known to be good

    _joining_note(quiet)
    quiet = quiet or not is_main_process()  # --json: progress on stderr, the summary on stdout
    with console.TrainingProgress(quiet, checked.recipe.train.finetune_epochs) as progress:
        run = api.run_checked(checked, device, progress, strict)
    if run is None:  # not the main process
        return
    if as_json:
        console.json_line({"run": str(run.path), **run.summary})
    elif quiet:
        console.text(str(run.path))
    else:
        console.clean_summary(run.summary, str(run.path))


def _launch(nproc: int, nodes: "Nodes", device: str) -> int:
    """Run this command under torchrun, in this process: its exit code, or one line for a rendezvous that failed."""
    from emlc_cli.runtime.nodes import torch_log_lines_off

    with torch_log_lines_off():
        from emlc_cli.runtime import distributed
        from emlc_cli.runtime.device import check_nproc

    check_nproc(nproc, device)
    return distributed.launch(nproc, distributed.command_args("clean", sys.argv), nodes)


def _joining_note(quiet: bool) -> None:
    """Under torchrun, what this process is about to wait for (at most EMLC_DIST_TIMEOUT seconds)."""
    from emlc_cli.cli import console
    from emlc_cli.runtime.device import TIMEOUT_ENV, launch_env, prints_errors, rank_prefix

    launch = launch_env()
    if launch.distributed and prints_errors() and not quiet:
        console.note(f"{rank_prefix()}waiting for the {launch.world_size} processes to join at {launch.endpoint} "
                     f"(at most {launch.timeout_s:g} s, {TIMEOUT_ENV})")


def _dry_run(checked: Any, device: str) -> None:
    """The resolved recipe and what the run would do; the device is resolved too (a missing GPU fails here)."""
    from emlc_cli.cli import console
    from emlc_cli.recipe.schema import dump_recipe
    from emlc_cli.runtime.device import resolve_device

    where = resolve_device(device)
    verb = "replace" if checked.replaces else "write"
    console.text(f"# recipe: {checked.recipe.origin or checked.recipe.name}")
    console.text(dump_recipe(checked.recipe))
    console.text(f"# {checked.prepared.describe()}; would {verb} {checked.out} on {where}")
    for message in checked.prepared.warnings:
        console.warning(message)
