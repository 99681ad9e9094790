"""The fenced examples of README.md and docs/*.md, and the examples every `--help` ends with, as tests read them.

A block is *marked* illustrative by the line `<!-- illustrative: REASON -->` right before its opening fence;
every other python or shell block must be run by tests/test_docs.py. A shell block runs one command per line
(a trailing backslash continues it) with `emlc` on PATH as this checkout's `python -m emlc_cli`."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "console", "shell"}
LANGS = SHELL | {"python"}
MARK = re.compile(r"^<!-- illustrative: (?P<reason>.+?) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    doc: str      # path relative to the repository
    heading: str  # the nearest heading above it
    index: int    # its number among the blocks under that heading
    lang: str
    code: str
    line: int     # of the opening fence
    marked: str | None  # the reason it is illustrative, or None

    @property
    def key(self) -> tuple[str, str, int]:
        return self.doc, self.heading, self.index


def blocks(path: Path) -> list[Block]:
    """Every fenced python or shell block of one Markdown file."""
    lines, found, heading, counts = path.read_text().splitlines(), [], "", {}
    number = 0
    while number < len(lines):
        fence = FENCE.match(lines[number])
        if fence is None:
            heading = lines[number].lstrip("#").strip() if lines[number].startswith("#") else heading
            number += 1
            continue
        end = next(i for i in range(number + 1, len(lines)) if lines[i].startswith("```"))
        if fence["lang"] in LANGS:
            mark = MARK.match(lines[number - 1]) if number else None
            index = counts[heading] = counts.get(heading, -1) + 1
            found.append(Block(path.relative_to(ROOT).as_posix(), heading, index, fence["lang"],
                               "\n".join(lines[number + 1:end]) + "\n", number + 1, mark["reason"] if mark else None))
        number = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in DOCS for block in blocks(path)]


def block(doc: str, heading: str, index: int = 0) -> Block:
    (found,) = [b for b in all_blocks() if b.key == (doc, heading, index)]
    assert found.marked is None, f"{doc}:{found.line} is marked illustrative but a test runs it"
    return found


def commands(code: str) -> list[str]:
    """A shell block's commands: backslash continuations joined, blank and comment-only lines left out."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def emlc_env(shim_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a documented command runs in: `emlc` is this checkout's, one thread per process."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / "emlc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m emlc_cli "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "120", **extra}


PLAIN = re.compile(r"^emlc\s[^|;&<>$`\\]*$")  # an emlc command line with nothing for a shell to do


def run_shell(code: str, cwd: Path, env: dict[str, str], substitute=lambda command: command) -> list[str]:
    """Each command as written (`substitute` may swap a placeholder path or address), failing on the first that
    exits non-zero; returns their outputs. A plain `emlc ...` line runs in this process (the console script's own
    app, in `cwd` with `env`), anything else through bash."""
    outputs = []
    for command in commands(code):
        command = substitute(command)
        code_and_output = _in_process(command, cwd, env) if PLAIN.match(command) else _bash(command, cwd, env)
        assert code_and_output[0] == 0, f"{command}\nexit {code_and_output[0]}\n{code_and_output[1]}"
        outputs.append(code_and_output[1])
    return outputs


def _bash(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return done.returncode, done.stdout + done.stderr


def _in_process(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from emlc_cli.cli.app import app

    words = shlex.split(command, comments=True)[1:]
    before = Path.cwd()
    os.chdir(cwd)
    try:
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v and k not in ("PATH", "PYTHONPATH")}
        result = CliRunner().invoke(app, words, env=changed)
    finally:
        os.chdir(before)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def help_examples() -> list[str]:
    """Every example command line that an `emlc ... --help` shows (the `Examples` epilogs and the workflows)."""
    from emlc_cli.cli import app as app_module

    texts = [app_module.WORKFLOWS, app_module.recipes_app.info.epilog, app_module.cache_app.info.epilog]
    typers = (app_module.app, app_module.recipes_app, app_module.cache_app)
    texts += [command.epilog or "" for typer_app in typers for command in typer_app.registered_commands]
    examples = []
    for text in texts:
        for line in (text or "").splitlines():
            line = line.strip()
            if re.match(r"^(\w+=\S+ )*emlc ", line):
                examples.append(re.sub(r"\s+#.*$", "", line))
    return list(dict.fromkeys(examples))
