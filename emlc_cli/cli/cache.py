"""`emlc cache ls | rm KEY... | rm --all`: the persistent store of decoded images (emlc_cli/cache/store.py) and of
frozen backbones' embeddings (emlc_cli/cache/embeddings.py)."""
from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import FLAG
from emlc_cli.errors import EmlcError

EXAMPLES = """[bold]Examples[/]

  emlc cache ls                  # what is kept, where, how large
  emlc cache rm 3f2a9c           # one entry, by the start of its key
  emlc cache rm --all            # everything emlc decoded or embedded
  EMLC_CACHE_DIR=none emlc clean ...   # a run that keeps nothing"""


def ls_command() -> None:
    """List the decoded-image caches and the kept embeddings, most recently used first."""
    from emlc_cli.cli import console
    from emlc_cli.cache import embeddings, store

    base = store.root()
    if base is None:
        console.text("the image cache is off (EMLC_CACHE_DIR=none)")
        return
    cap = store.max_bytes()
    found, kept = store.entries(include_damaged=True), embeddings.entries()
    together = sum(e.bytes for e in [*found, *kept])  # the cap covers both stores
    console.text(f"{base}: {len(found)} cache(s), {sum(e.bytes for e in found) / 2**20:.1f} MB; with the embeddings "
                 f"{together / 2**20:.1f} MB of {cap / 2**30:.1f} GB (EMLC_CACHE_MAX_GB)")
    for entry in found:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        what = (f"invalid: {entry.problem} (a run decodes again; `emlc cache rm {entry.key[:12]}` removes it)" if entry.problem
                else f"{entry.info['rows']:>8} x {entry.info['size']} px  used {used}  {entry.info['source']}")
        console.text(f"{entry.key[:12]}  {entry.bytes / 2**20:9.1f} MB  {what}")
    console.text(f"{embeddings.root()}: {len(kept)} embedding(s), {sum(e.bytes for e in kept) / 2**20:.1f} MB")
    for entry in kept:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        encoder = entry.info.get("encoder")
        backbone = entry.info.get("backbone") or (encoder.get("backbone", "?") if isinstance(encoder, dict) else "?")
        console.text(f"{entry.key[:12]}  {entry.bytes / 2**20:9.1f} MB  {entry.info['rows']:>8} x {entry.info.get('dim', '?')}-d  "
                     f"used {used}  {backbone}  {entry.info.get('source', '?')}")


def rm_command(
    keys: Annotated[Optional[list[str]], typer.Argument(metavar="KEY...", show_default=False,
                                                        help="Entries to remove: a key or its first characters (emlc cache ls).")] = None,
    remove_all: Annotated[bool, typer.Option("--all", metavar=FLAG, help="Remove every entry.")] = False,
) -> None:
    """Remove decoded-image caches or kept embeddings (a run that needs one decodes or embeds its images again)."""
    from emlc_cli.cli import console
    from emlc_cli.cache import embeddings, store

    if keys and remove_all:
        raise EmlcError("KEY... and --all: give one of them")
    if not keys and not remove_all:
        raise EmlcError("give the KEY of each cache to remove (`emlc cache ls` lists them), or --all")
    found = [*store.entries(include_damaged=True), *embeddings.entries()]
    chosen = found if remove_all else [_one(found, key) for key in keys or []]
    for entry in chosen:
        (store.remove if isinstance(entry, store.Entry) else embeddings.remove)(entry)
    console.text(f"removed {len(chosen)} cache(s), {sum(e.bytes for e in chosen) / 2**20:.1f} MB")


def _one(found: list, prefix: str) -> object:
    matches = [e for e in found if e.key.startswith(prefix.lower())] if prefix else []
    if len(matches) != 1:
        what = "no cache" if not matches else f"{len(matches)} caches"
        raise EmlcError(f"KEY {prefix}: {what} with that key (`emlc cache ls` lists them)")
    return matches[0]
