"""Issue 12: what emlc may write, replace and print. Every refusal is one stderr line naming the culprit,
exit code 2, no traceback, and the data folder's content is unchanged."""
from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emlc_cli import errors
from emlc_cli.run_folder import writer as outputs, layout as run_folder
from emlc_cli.cli.app import app
from emlc_cli.errors import OutputError
from tests.conftest import TINY
from tests.test_bad_input import tree_hash
from tests.test_hub import TOKEN, feature_run, hub  # noqa: F401 - fixtures
from tests.test_review import fake_run

runner = CliRunner()
FAST = [o for o in TINY if not o.startswith(("train.epochs=", "meta.warmup_epochs="))] + ["train.epochs=2", "meta.warmup_epochs=1"]


def one_line_error(result, *needles: str, code: int = 2) -> str:
    """The single non-empty output line of a refused command, checked for the needles."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "╭" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def clean_args(folder: dict, out: Path, *extra: str) -> list[str]:
    return ["clean", str(folder["root"]), "--clean", str(folder["clean"]), "--out", str(out), "--recipe", "quick",
            "--device", "cpu", "--quiet", *FAST, *extra]


@pytest.fixture
def image_run(noisy_folder) -> Path:
    """A fake run folder (no training) whose source.json points at the noisy_folder images."""
    root = noisy_folder["root"]
    rows = [(p.relative_to(root).as_posix(), p.parent.name, p.parent.name, 0.9) for p in sorted(root.rglob("*.png"))]
    return fake_run(noisy_folder["tmp"] / "fake", rows, root=root)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid is gone
    return child.pid


def write_lock(out: Path, pid: int) -> Path:
    lock = run_folder.lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    return lock


# 1. --overwrite never replaces DATA, a folder holding DATA or the run, or a folder emlc did not write


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_clean_out_parent_of_data_with_overwrite_is_refused(noisy_folder, dry_run):
    before = tree_hash(noisy_folder["tmp"])
    result = runner.invoke(app, clean_args(noisy_folder, noisy_folder["tmp"], "--overwrite", *dry_run))
    one_line_error(result, "contains the data folder", str(noisy_folder["root"]))
    assert tree_hash(noisy_folder["tmp"]) == before


def test_clean_out_is_data_or_holds_a_manifest(noisy_folder):
    before = tree_hash(noisy_folder["root"])
    one_line_error(runner.invoke(app, clean_args(noisy_folder, noisy_folder["root"], "--overwrite")), "is the data folder")
    holder = noisy_folder["tmp"] / "holder"
    holder.mkdir()
    manifest = holder / "decisions.csv"
    manifest.write_bytes(noisy_folder["clean"].read_bytes())
    (holder / run_folder.MARKERS["run"]).write_text("{}")  # even an emlc folder is kept when it holds an input
    args = clean_args({**noisy_folder, "clean": manifest}, holder, "--overwrite")
    one_line_error(runner.invoke(app, args), "contains the input", "decisions.csv")
    assert manifest.is_file() and tree_hash(noisy_folder["root"]) == before


def test_overwrite_only_replaces_folders_emlc_wrote(noisy_folder, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    result = runner.invoke(app, clean_args(noisy_folder, foreign, "--overwrite"))
    one_line_error(result, str(foreign), "not a folder emlc wrote")
    assert (foreign / "thesis.tex").read_text() == "precious"
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in run_folder.LEGACY_RUN:
        (legacy / name).write_text("{}")
    outputs.check_out_dir(legacy, noisy_folder["root"], overwrite=True)  # a run folder from before the markers
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / run_folder.MARKERS["export"]).write_text("{}")
    outputs.check_out_dir(marked, noisy_folder["root"], overwrite=True)


def test_export_and_push_refuse_data_its_parents_and_the_run(noisy_folder, image_run):
    before = tree_hash(noisy_folder["tmp"])
    cases = [
        (["export", str(image_run), str(noisy_folder["tmp"]), "--overwrite"], "contains the data folder"),
        (["export", str(image_run), str(image_run.parent), "--overwrite"], "contains the run folder"),
        (["export", str(image_run), str(noisy_folder["root"] / "red" / "new")], "lies inside the data folder"),
        (["export", str(image_run), str(image_run), "--overwrite"], "is the run folder"),
        (["push", str(image_run), "--to", str(image_run), "--overwrite"], "is the run folder"),
        (["push", str(image_run), "--to", str(noisy_folder["root"] / "hub")], "lies inside the data folder"),
        (["push", str(image_run), "--to", str(noisy_folder["root"].parent), "--overwrite"], "contains"),
    ]
    for args, message in cases:
        one_line_error(runner.invoke(app, args), message)
    assert tree_hash(noisy_folder["tmp"]) == before


def test_export_writes_a_marker_and_can_replace_its_own_export(noisy_folder, image_run, tmp_path):
    dest = tmp_path / "clean-copy"
    assert runner.invoke(app, ["export", str(image_run), str(dest), "--quiet"]).exit_code == 0
    assert (dest / run_folder.MARKERS["export"]).is_file() and outputs.is_emlc_folder(dest)
    again = runner.invoke(app, ["export", str(image_run), str(dest), "--overwrite", "--quiet"])
    assert again.exit_code == 0, again.output
    assert not run_folder.lock_path(dest).exists() and not run_folder.staging_path(dest).exists()


# 2. tokens: stripped before use, redacted in every form, never logged (EMLC_DEBUG=1 included)


def test_redact_hides_every_form_of_a_token():
    secret = TOKEN + "\r\n"
    errors.register_secret(secret)
    messages = [f"Illegal header value b'Bearer {TOKEN}\\r'", repr(f"Bearer {secret}"), repr(secret.encode()),
                json.dumps({"authorization": secret}), f"token {TOKEN} here", repr(secret.encode())[2:-1]]
    for message in messages:
        assert TOKEN not in errors.redact(message) and "***" in errors.redact(message), message


@pytest.mark.parametrize("via", ["--token", "HF_TOKEN"])
def test_token_with_crlf_is_stripped_and_never_shown_under_debug(hub, feature_run, monkeypatch, caplog, tmp_path, via):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("EMLC_DEBUG", "1")
    args = ["push", str(feature_run), "--repo", "someone/crlf"]
    if via == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", TOKEN + "\r\n")
    else:
        args += ["--token", TOKEN + "\r\n"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    authorised = [r for r in hub.requests if r["path"] == "/api/repos/create"]
    assert authorised and all(r["authorization"] == f"Bearer {TOKEN}" for r in authorised)
    assert logging.getLogger("httpx").level == logging.WARNING and logging.getLogger("urllib3").level == logging.WARNING
    assert logging.getLogger("emlc_cli").getEffectiveLevel() == logging.DEBUG
    for text in (result.output, caplog.text):
        assert TOKEN not in text
    for path in [*feature_run.rglob("*"), *tmp_path.rglob("*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_refused_push_redacts_a_crlf_token(hub, feature_run, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    hub.refuse = f"bad header b'Bearer {TOKEN}\\r' for {TOKEN}"
    monkeypatch.setenv("HF_TOKEN", TOKEN + "\n")
    result = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/forbidden"])
    one_line_error(result, "push to someone/forbidden failed", "***")
    assert TOKEN not in result.output
    monkeypatch.setenv("EMLC_DEBUG", "1")
    debug = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/forbidden"])
    assert debug.exit_code != 0 and TOKEN not in str(debug.exception) and TOKEN not in debug.output
    logging.getLogger("emlc_cli.export.hub").warning("header %s", f"Bearer {TOKEN}\r\n")
    assert TOKEN not in caplog.text


# 3. a lock on the staging folder


def test_second_run_on_a_locked_out_is_refused_with_the_pid(noisy_folder, tmp_path):
    out = tmp_path / "run"
    lock = write_lock(out, os.getppid())  # a live process that is not this one
    result = runner.invoke(app, clean_args(noisy_folder, out))
    one_line_error(result, f"pid {os.getppid()}", "--out")
    with pytest.raises(OutputError, match=f"pid {os.getppid()}"):
        outputs.RunDir(out)
    assert lock.is_file() and not out.exists()


def test_a_stale_lock_is_taken_over_and_released(image_run, tmp_path):
    dest = tmp_path / "copy"
    write_lock(dest, dead_pid())
    result = runner.invoke(app, ["export", str(image_run), str(dest), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not run_folder.lock_path(dest).exists()
    write_lock(tmp_path / "r", dead_pid())
    with outputs.RunDir(tmp_path / "r") as run:
        assert outputs.lock_holder(run_folder.lock_path(run.final)) == os.getpid()
    assert not run_folder.lock_path(tmp_path / "r").exists()


# 4. disk full: one line, nothing half-written, the last complete state kept


def _torch_save_fails_after(monkeypatch, good: int) -> None:
    import torch

    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > good:
            Path(f).write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                               "data/3: file write failed")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_while_saving_the_state_keeps_the_last_complete_one(noisy_folder, monkeypatch):
    _torch_save_fails_after(monkeypatch, good=1)
    out = noisy_folder["tmp"] / "run"
    before = tree_hash(noisy_folder["root"])
    result = runner.invoke(app, clean_args(noisy_folder, out))
    one_line_error(result, "no space left while writing", run_folder.STATE_FILE, "MB free", "--resume")
    staged = run_folder.staging_path(out)
    assert sorted(p.name for p in staged.iterdir()) == sorted([run_folder.STATE_FILE, run_folder.MARKERS["run"], "emlc.log"])
    assert outputs.load_training_state(staged / run_folder.STATE_FILE)["seed"] == 0
    assert not out.exists() and not run_folder.lock_path(out).exists() and tree_hash(noisy_folder["root"]) == before


def test_disk_full_on_the_first_state_or_an_output_removes_the_staging(tmp_path, monkeypatch):
    _torch_save_fails_after(monkeypatch, good=0)
    with pytest.raises(OutputError, match="no space left while writing"):
        with outputs.RunDir(tmp_path / "a") as run:
            run.save_state({"seed": 0})
    assert not run_folder.staging_path(tmp_path / "a").exists() and not run_folder.lock_path(tmp_path / "a").exists()

    real_open = open

    def full_open(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        if str(path).endswith("corrected.csv"):
            handle.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return handle

    monkeypatch.setattr(outputs, "open", full_open, raising=False)
    with pytest.raises(OutputError, match=r"no space left while writing .*corrected.csv \(\d+ MB free\)"):
        with outputs.RunDir(tmp_path / "b") as run:
            run.write_json("summary.json", {})
            run.write_csv("corrected.csv", run_folder.CORRECTED_COLUMNS, [])
    assert not run_folder.staging_path(tmp_path / "b").exists()


def test_disk_full_during_export_is_one_line_and_leaves_nothing(image_run, tmp_path, monkeypatch):
    import shutil

    def no_link(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def full(src, dst, *args, **kwargs):
        Path(dst).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copy2", full)
    dest = tmp_path / "copy"
    one_line_error(runner.invoke(app, ["export", str(image_run), str(dest)]), "no space left while writing", "MB free")
    assert not dest.exists() and not run_folder.staging_path(dest).exists() and not run_folder.lock_path(dest).exists()


# 5. command-line values


def test_bad_out_and_seed_values_are_one_line(noisy_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--out", "."], "--out '.'"),
        (["--out", ".."], "--out '..'"),
        (["--out", str(tmp_path / "afile" / "run")], "is a file, not a folder"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**64)], "--seed"),
    ]
    for extra, message in cases:
        for dry in ([], ["--dry-run"]):
            args = clean_args(noisy_folder, tmp_path / "unused", *dry)
            args[args.index("--out"):args.index("--out") + 2] = []
            one_line_error(runner.invoke(app, [*args, *extra]), message)
    assert runner.invoke(app, [*clean_args(noisy_folder, tmp_path / "ok", "--dry-run"), "--seed", str(2**32 - 1)]).exit_code == 0


# 6. nothing is written inside DATA


def test_review_never_writes_into_data(noisy_folder, image_run, tmp_path):
    before = tree_hash(noisy_folder["root"])
    for option, name in (("--out", "red/review.html"), ("--png", "red/review.png"), ("--out", "red")):
        result = runner.invoke(app, ["review", str(image_run), option, str(noisy_folder["root"] / name)])
        one_line_error(result, option, "lies inside the data folder")
    assert tree_hash(noisy_folder["root"]) == before


def test_review_replaces_only_its_own_files(image_run, tmp_path):
    report, notes = tmp_path / "report.html", tmp_path / "notes.html"
    for _ in range(2):
        assert runner.invoke(app, ["review", str(image_run), "--out", str(report)]).exit_code == 0
    notes.write_text("<p>mine</p>")
    one_line_error(runner.invoke(app, ["review", str(image_run), "--out", str(notes)]), "not written by emlc")
    one_line_error(runner.invoke(app, ["review", str(image_run), "--out", str(image_run / "summary.json")]), "summary.json")
    assert notes.read_text() == "<p>mine</p>"


# 7. tampered or foreign run folders


def _student(run: Path, num_classes: int = 3, **config) -> None:
    from safetensors.torch import save_file

    from emlc_cli.models.build import build_classifier

    model = build_classifier("small_cnn", 3, 8, True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "student.safetensors"))
    base = {"architecture": "small_cnn", "width": 8, "small_stem": True, "num_classes": num_classes,
            "classes": [f"c{i}" for i in range(num_classes)], "input_size": 16, "in_features": 0}
    (run / "student.json").write_text(json.dumps({k: v for k, v in {**base, **config}.items() if v is not None}))


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


def test_tampered_student_files_are_one_line(noisy_folder, image_run, tmp_path):
    evaluate = ["evaluate", str(image_run), "--data", str(noisy_folder["root"]), "--device", "cpu"]
    sentinel = tmp_path / "executed"
    _student(image_run)
    (image_run / "student.safetensors").write_bytes(pickle.dumps(_Payload(sentinel)))
    one_line_error(runner.invoke(app, evaluate), "student.safetensors", "not a safetensors checkpoint")
    assert not sentinel.exists()
    _student(image_run, architecture=None)
    one_line_error(runner.invoke(app, evaluate), "student.json", "'architecture' is missing")
    _student(image_run, num_classes=5)
    one_line_error(runner.invoke(app, evaluate), "student.json", "num_classes")
    _student(image_run, classes=["a", "b"])
    one_line_error(runner.invoke(app, evaluate), "student.json", "'classes'")
    _student(image_run, width=24)
    one_line_error(runner.invoke(app, evaluate), "student.json", "does not match its weights")
    _student(image_run, resize="squash")
    one_line_error(runner.invoke(app, evaluate), "student.json", "key 'resize' must be 'stretch' or 'crop'")


@pytest.mark.parametrize("key, value", [("classes", 3), ("change_matrix", [[1, "x"], [0, 1]]), ("estimated_noise_rate", "high"),
                                        ("epochs", [{"epoch": "one"}]), ("images", True), ("changed_per_class", [])])
def test_summary_with_wrong_types_is_one_line(image_run, tmp_path, key, value):
    summary = json.loads((image_run / "summary.json").read_text())
    (image_run / "summary.json").write_text(json.dumps({**summary, key: value}))
    result = runner.invoke(app, ["review", str(image_run), "--out", str(tmp_path / "r.html")])
    one_line_error(result, "summary.json", f"'{key}'")
    assert not (tmp_path / "r.html").exists()


# 8. usage errors


@pytest.mark.parametrize("args, message", [
    (["clean", "x"], "missing option --clean"),
    (["clean"], "missing argument DATA"),
    (["clean", "x", "--clean", "c.csv", "--bogus"], "--bogus"),
    (["review"], "missing argument RUN"),
    (["nope"], "nope"),
])
def test_usage_errors_are_one_line(args, message):
    line = one_line_error(runner.invoke(app, args), message)
    assert line.startswith("error:") and "--help" in line


def test_help_still_works():
    result = runner.invoke(app, ["clean", "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and "--seed" in result.output


def test_a_foreign_staging_folder_or_lock_file_is_never_removed(tmp_path):
    out = tmp_path / "r"
    staged = run_folder.staging_path(out)
    staged.mkdir()
    (staged / "mine.txt").write_text("user data")
    with pytest.raises(OutputError, match="was not made by emlc"):
        outputs.RunDir(out)
    assert (staged / "mine.txt").read_text() == "user data"
    lock = run_folder.lock_path(tmp_path / "s")
    lock.write_text("not a lock, a user's notes")
    with pytest.raises(OutputError, match="is not an emlc lock"):
        outputs.RunDir(tmp_path / "s")
    assert lock.read_text() == "not a lock, a user's notes"


def test_every_http_logger_of_the_hub_stack_stays_at_warning_under_debug():
    """At DEBUG the HTTP clients log request headers, the token among them: they stay at WARNING."""
    import logging

    import huggingface_hub.utils

    from emlc_cli.cli.app import configure_logging

    huggingface_hub.utils.get_session()  # imports the HTTP client and creates its loggers
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)  # as an application (or a notebook's basicConfig) may set it
    configure_logging(True)
    try:
        http = [name for name in logging.root.manager.loggerDict if name.split(".")[0].startswith(("http", "urllib", "h1", "h2"))]
        assert http
        assert all(logging.getLogger(name).getEffectiveLevel() >= logging.WARNING for name in http), http
    finally:
        configure_logging(False)
        logging.getLogger().setLevel(root_level)
