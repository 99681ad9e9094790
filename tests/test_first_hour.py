"""Issue 17, the first hour, without training: help that teaches, usage errors that point at the fix, a --dry-run
that checks what the run checks, errors that name the command's own options, and inputs validated before torch
is imported."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from tests.conftest import write_csv

runner = CliRunner()
wide = CliRunner(env={"COLUMNS": "200"})
COMMANDS = [["clean"], ["evaluate"], ["review"], ["push"], ["export"], ["demo"]]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_examples(command):
    result = wide.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples" in result.output
    assert re.search(rf"^\s*emlc {command[0]} \S", result.output, re.M), result.output


def test_root_help_has_the_common_workflows_and_completion():
    result = wide.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Common workflows" in result.output
    for step in ("emlc demo", "emlc clean ./images", "emlc review runs/images", "-c decisions.csv"):
        assert step in result.output
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_shell_completion_completes_commands_and_options():
    env = {"_EMLC_COMPLETE": "complete_bash", "COMP_WORDS": "emlc clean --re", "COMP_CWORD": "2"}
    result = runner.invoke(app, [], prog_name="emlc", env=env)
    assert result.exit_code == 0 and result.output.split() == ["--revision", "--recipe", "--resume"]


def test_clean_help_groups_options_and_names_defaults():
    text = wide.invoke(app, ["clean", "--help"]).output
    for panel in ("Data", "Verified set", "Recipe", "Run", "Outputs", "Devices"):
        assert re.search(rf"─ {panel} ─", text), panel
    assert "[default: frozen if its backbone is cached, else default; features with --feature-column]" in text  # rich used to eat it as markup
    assert "[default: runs/NAME, NAME from DATA]" in text


@pytest.mark.parametrize("columns", [80, 120])
def test_the_help_captured_in_docs_names_todays_options(columns):
    """docs/clean-help-*.txt are copies of `COLUMNS=N emlc clean --help` (docs/progress.sh): the same options, the
    same order, or a reader is shown a command that no longer exists. Layout and default notes differ between
    rich and typer versions (CI's lowest-versions pass), so the options named are compared, not bytes."""
    live = CliRunner(env={"COLUMNS": str(columns)}).invoke(app, ["clean", "--help"]).output
    captured = (Path(__file__).parents[1] / "docs" / f"clean-help-{columns}.txt").read_text()
    options = lambda text: re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)  # noqa: E731
    assert options(captured) == options(live)


def test_usage_line_and_placeholders_read_plainly():
    text = wide.invoke(app, ["clean", "--help"]).output
    assert "Usage: emlc clean [OPTIONS] DATA [KEY=VALUE]..." in text
    assert "<list[Path]>" not in text and "{data}" not in text and "<bool>" not in text
    assert re.search(r"--clean\s+-c\s+CSV", text) and re.search(r"--out\s+-o\s+DIR", text)


def test_a_recipe_key_given_as_an_option_names_the_override():
    result = runner.invoke(app, ["clean", "data", "--clean", "c.csv", "--epochs", "3"])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and "train.epochs=" in line and "--nproc" not in line
    other = runner.invoke(app, ["clean", "data", "--clean", "c.csv", "--learning-rate", "3"])
    assert other.exit_code == 2 and "section.key=value" in other.output


@pytest.fixture
def small(tmp_path):
    from tests.conftest import CLASSES, COLOURS, make_image
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    rows = []
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(6):
            make_image(COLOURS[name], rng).save(root / name / f"{i}.png")
            if i < 3:
                rows.append((f"{name}/{i}.png", name))
    return {"root": root, "clean": write_csv(tmp_path / "clean.csv", rows), "tmp": tmp_path}


def dry(small, *extra):
    return runner.invoke(app, ["clean", str(small["root"]), "--clean", str(small["clean"]), "--dry-run", *extra])


def test_dry_run_checks_the_device(small):
    bad = dry(small, "--device", "gpu")
    assert bad.exit_code == 2 and "--device 'gpu'" in bad.output
    import torch

    if not torch.cuda.is_available():
        missing = dry(small, "--device", "cuda")
        assert missing.exit_code == 2 and "no CUDA GPU" in missing.output


def test_dry_run_checks_out_and_says_when_it_would_replace(small):
    out = small["tmp"] / "runs" / "one"
    out.mkdir(parents=True)
    taken = dry(small, "--out", str(out))
    assert taken.exit_code == 2 and "already exists" in taken.output
    (out / ".emlc-run").write_text("{}")
    replaced = dry(small, "--out", str(out), "--overwrite", "--device", "cpu")
    assert replaced.exit_code == 0, replaced.output
    assert f"would replace {out} on cpu" in replaced.output


def test_override_errors_name_the_override_not_the_shipped_file(small):
    result = dry(small, "--recipe", "quick", "train.epochs=0")
    assert result.exit_code == 2
    assert "override train.epochs=0 (command line)" in result.output and "quick.yaml" not in result.output


def test_epochs_lowered_alone_scales_the_warm_up_and_says_so(small):
    """`--recipe quick train.epochs=3` (quick warms up 5 of 10 epochs) runs: the warm-up keeps its share (2 of 3)."""
    result = dry(small, "--recipe", "quick", "train.epochs=3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "# recipe: quick + train.epochs=3 meta.warmup_epochs=2 (scaled with train.epochs)" in result.output
    assert re.search(r"warmup_epochs: 2\n", result.output)
    given = dry(small, "--recipe", "quick", "train.epochs=3", "meta.warmup_epochs=3")
    assert given.exit_code == 2 and "override meta.warmup_epochs=3 (command line)" in given.output


def fake_run(tmp_path: Path, data: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".emlc-run").write_text("{}")
    (run / "corrected.csv").write_text("path,label,corrected_label,confidence,changed,split\n")
    (run / "source.json").write_text(json.dumps({"kind": "imagefolder", "root": str(data), "location": str(data),
                                                 "classes": ["blue", "green", "red"]}))
    return run


@pytest.mark.parametrize("command, option", [(["export"], "DEST"), (["push", "--to"], "--to")])
def test_export_and_push_name_their_own_options(small, command, option):
    run = fake_run(small["tmp"], small["root"])
    dest = small["tmp"] / "dest"
    dest.mkdir()
    args = [command[0], str(run), *command[1:], str(dest)]
    taken = runner.invoke(app, args)
    assert taken.exit_code == 2 and f"{option} {dest} already exists" in taken.output
    inside = runner.invoke(app, [*args[:-1], str(small["root"] / "copy")])
    assert inside.exit_code == 2 and f"{option} {small['root'] / 'copy'} lies inside the data folder" in inside.output
    for result in (taken, inside):
        assert "--out" not in result.output and "\n" not in result.output.strip()


TORCH_PROBE = """
import atexit, sys
atexit.register(lambda: print("TORCH" if "torch" in sys.modules else "NO-TORCH"))
from emlc_cli.cli.app import main
sys.argv = ["emlc", *sys.argv[1:]]
main()
"""


def probe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TORCH_PROBE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_bad_inputs_answer_before_torch_is_imported(small):
    bad_manifest = write_csv(small["tmp"] / "bad.csv", [("blue/0.png", "blue"), ("blue/missing.png", "blue")])
    existing = small["tmp"] / "taken"
    existing.mkdir()
    base = ["clean", str(small["root"]), "--clean", str(small["clean"])]
    cases = [
        (["clean", "/nonexistent", "--clean", "x.csv"], "data not found"),
        (["clean", str(small["root"]), "--clean", str(bad_manifest)], "missing.png"),
        (["clean", str(small["root"]), "--clean", str(small["tmp"] / "absent.csv")], "absent.csv"),
        ([*base, "train.epochs=0"], "train.epochs=0"),
        ([*base, "--device", "tpu"], "--device 'tpu'"),
        ([*base, "--out", str(existing)], "already exists"),
    ]
    for args, expected in cases:
        done = probe(*args, cwd=small["tmp"])
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stdout.strip() == "NO-TORCH", (args, done.stdout)


def test_validation_modules_need_no_torch():
    code = ("import sys; import emlc_cli.prepare.preflight, emlc_cli.runtime.device, emlc_cli.run_folder.log, emlc_cli.export.card, emlc_cli.prepare.verified, "
            "emlc_cli.cli.clean; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("width", [80, 120])
def test_progress_shows_whole_times_and_a_whole_run_bar(width):
    """Both rows fit the terminal with their elapsed and remaining times whole; the whole-run bar counts training and
    fine-tune steps."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from emlc_cli.cli import console
    from emlc_cli.train.events import StepReport

    screen = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    shown = console.TrainingProgress(finetune_epochs=2, console=screen)
    shown.progress = Progress(*console.progress_columns(), console=screen, auto_refresh=False)
    for step in range(1, 6):
        shown(StepReport(7, 10, step, 250, "meta", 1.234567, 2.345678, 12345.6))
    screen.print(shown.progress.make_tasks_table(shown.progress.tasks))
    rows = screen.file.getvalue().splitlines()
    assert len(rows) == 2 and all(len(row) <= width for row in rows), rows
    whole, epoch = rows
    assert whole.startswith("whole run") and f" {(7 * 250 + 5) / (12 * 250):.0%} " in whole  # 10 + 2 fine-tune epochs
    assert epoch.startswith("epoch 8/10 meta") and "5/250" in epoch
    for row in rows:
        assert re.search(r" \d:\d\d:\d\d (\d:\d\d:\d\d|-:--:--)$", row.rstrip()), row
    if width >= 120:
        assert "12346 img/s, student 1.235, teacher 2.346" in epoch
