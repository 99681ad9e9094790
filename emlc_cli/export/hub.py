"""Publishing a run: the cleaned dataset in Hub layout (parquet shards + a README.md dataset card), written to a
local folder or pushed to the Hugging Face Hub in one commit (image_folder.py writes a corrected image folder).

The source is reopened read-only from the run's source.json. A token is only ever held in memory: it is
never logged, printed, or written to any file, and is redacted from error messages.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from emlc_cli._version import __version__
from emlc_cli.run_folder import layout as run_folder
from emlc_cli.export.card import CardInfo, ShardSizes, dataset_card
from emlc_cli.data.huggingface import open_dataset
from emlc_cli.data.kinds import load_source, run_source
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.spec import spec_from_record
from emlc_cli.errors import DataError, EmlcError, redact, register_secret
from emlc_cli.run_folder.writer import RunDir, check_out_dir, run_inputs

log = logging.getLogger(__name__)
MAX_SHARD_BYTES = 500 * 2**20
NEW_COLUMNS = ("label", "original_label", "label_confidence", "label_changed", "label_verified")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(EmlcError):
    """The Hub refused or could not be reached; the message never holds the token."""


@dataclass
class Published:
    location: str
    rows: int
    changed: int
    verified: int
    files: list[str] = field(default_factory=list)


def cleaned_dataset(run: Path, data: Optional[str] = None) -> tuple[Any, str, dict[str, Any]]:
    """The source dataset with `label` (corrected, ClassLabel), `original_label`, `label_confidence`,
    `label_changed` and `label_verified` columns; plus the split name and the source record. `data`: where the
    run's data is now, if it moved."""
    from datasets import ClassLabel, Dataset, Features, Value, concatenate_datasets, disable_progress_bars

    disable_progress_bars()  # emlc prints its own one-line result
    record = run_source(run, data)
    spec = spec_from_record(record)
    source = load_source(spec)
    columns = _label_columns(source, run_folder.read_corrected(run, run_folder.CORRECTED_COLUMNS), record, Path(run))
    names = ClassLabel(names=list(source.classes))
    features = Features({"label": names, "original_label": names, "label_confidence": Value("float32"),
                         "label_changed": Value("bool"), "label_verified": Value("bool")})
    base = _base_dataset(source, spec, record)
    base = base.remove_columns([c for c in dict.fromkeys((spec.label_column, *NEW_COLUMNS)) if c in base.column_names])
    if source.kind == "metadata_folder" and "file_name" not in base.column_names:  # the rows' ids
        base = base.add_column("file_name", list(source.paths))
    return concatenate_datasets([base, Dataset.from_dict(columns, features=features)], axis=1), record.get("split") or "train", record


def _label_columns(source: LabeledImages, rows: list[dict[str, str]], record: dict[str, Any], run: Path) -> dict[str, list]:
    """Row-aligned label columns. Rows emlc could not read keep their label, with confidence 0."""
    where = record.get("location") or record.get("root")
    if list(source.classes) != list(record["classes"]):
        raise DataError(f"the source's classes changed since the run ({', '.join(source.classes)})", path=where)
    lookup = {name: i for i, name in enumerate(source.classes)}
    by_id, known = {row["path"]: row for row in rows}, set(source.paths)
    unknown = next((key for key in by_id if key not in known), None)
    if unknown is not None:
        raise DataError(f"row '{unknown}' of {run_folder.CORRECTED} is not in the source any more", path=run / run_folder.CORRECTED)
    columns: dict[str, list] = {name: [] for name in NEW_COLUMNS}
    for key, given in zip(source.paths, source.labels.tolist()):
        row = by_id.get(key)
        if row is not None and row["label"] != source.classes[given]:
            raise DataError(f"the source changed since the run: '{key}' was '{row['label']}', is '{source.classes[given]}'", path=where)
        columns["label"].append(lookup[row["corrected_label"]] if row else given)
        columns["original_label"].append(given)
        columns["label_confidence"].append(float(row["confidence"]) if row else 0.0)
        columns["label_changed"].append(bool(row and row["changed"] == "1"))
        columns["label_verified"].append(bool(row and row["split"] == "clean"))
    return columns


def _base_dataset(source: LabeledImages, spec: Any, record: dict[str, Any]) -> Any:
    """The original data: the Arrow dataset itself, or one built over an image folder's files or a .npy array."""
    from datasets import Dataset, Features, Image, List, Value

    if run_folder.is_folder_kind(source.kind):
        images = [str(Path(source.root) / p) for p in source.paths]
        return Dataset.from_dict({"image": images, "file_name": list(source.paths)},
                                 features=Features({"image": Image(), "file_name": Value("string")}))
    if source.kind == "npy":
        assert source.features is not None
        column = record.get("feature_column") or "features"
        features = Features({"id": Value("string"), column: List(Value("float32"), length=source.features.shape[1])})
        return Dataset.from_dict({"id": list(source.paths), column: source.features}, features=features)
    return open_dataset(spec, source.kind)[0]


def write_hub_layout(run: Path, dest: Path, overwrite: bool = False, data: Optional[str] = None,
                     card: Optional[CardInfo] = None, option: str = "--to") -> Published:
    """`dest/data/{split}-NNNNN-of-NNNNN.parquet` + `dest/README.md`: what `datasets.load_dataset(dest)` reads."""
    card = (card or CardInfo()).checked()
    record = run_source(run, data)
    local = None if record.get("kind") == "hub" else Path(record.get("location") or record["root"])
    check_out_dir(Path(dest), local, overwrite, protect=run_inputs(run), option=option)
    dataset, split, record = cleaned_dataset(run, data)
    sizes, names = ShardSizes(), []
    with RunDir(Path(dest), kind="export", option=option) as staged:
        with staged.writing(staged.path / "data"):
            for path in iter_shards(dataset, staged.path / "data", split):
                sizes.add(path)
                names.append(path.name)
        staged.write_text("README.md", dataset_card(Path(run), dataset, split, sizes, record, card))
        final = staged.commit()
    return Published(str(final), len(dataset), sum(dataset["label_changed"]), sum(dataset["label_verified"]),
                     ["README.md", *(f"data/{name}" for name in names)])


def iter_shards(dataset: Any, folder: Path, split: str) -> Iterator[Path]:
    """Parquet shards of at most ~500 MB, with image files embedded as bytes (as push_to_hub writes them), written
    one at a time when asked for: a caller that uploads and removes each before taking the next holds one on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    count = int(dataset._estimate_nbytes() / MAX_SHARD_BYTES) + 1
    for index in range(count):
        shard = _embedded(dataset.shard(num_shards=count, index=index, contiguous=True))
        path = folder / f"{split}-{index:05d}-of-{count:05d}.parquet"
        shard.to_parquet(str(path))
        yield path


def _embedded(shard: Any) -> Any:
    from datasets.features.features import require_decoding
    from datasets.table import embed_table_storage

    if not any(require_decoding(f, ignore_decode_attribute=True) for f in shard.features.values()):
        return shard
    return shard.with_format("arrow").map(embed_table_storage, batched=True, batch_size=100, keep_in_memory=True).with_format(None)


def resolve_token(token: Optional[str]) -> str:
    """--token, else HF_TOKEN, else the huggingface_hub login."""
    from huggingface_hub import get_token

    for source in (lambda: token, lambda: os.environ.get("HF_TOKEN"), get_token):
        raw = source()
        register_secret(raw)  # every form of it, surrounding whitespace included, is redacted from messages
        if raw and raw.strip():
            return raw.strip()  # a token file saved on Windows ends in CR LF: never send that in a header
    raise HubError("no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login`")


def push_to_hub(run: Path, repo: str, private: bool = False, token: Optional[str] = None,
                branch: Optional[str] = None, data: Optional[str] = None, card: Optional[CardInfo] = None) -> Published:
    """Create the dataset repo if needed, upload the shards one by one from the source, and commit them with the
    card in one commit that also removes the split's stale shards. No full local copy is made: each shard is
    written to a temporary file, uploaded to LFS storage and removed before the next is written."""
    if not REPO_ID.match(repo):
        raise HubError(f"--repo '{repo}': expected owner/name")
    card = (card or CardInfo()).checked()
    run_source(run, data)  # a moved data folder is one line before any token is looked up
    secret = resolve_token(token)
    dataset, split, record = cleaned_dataset(run, data)
    try:
        return _push(Path(run), dataset, split, record, _Target(repo, secret, private, branch), card)
    except EmlcError:
        raise
    except Exception as err:  # httpx / huggingface_hub errors: one line, token redacted
        raise _hub_error(repo, err, secret) from None


@dataclass
class _Target:
    repo: str
    secret: str = field(repr=False)
    private: bool
    branch: Optional[str]


def _push(run: Path, dataset: Any, split: str, record: dict[str, Any], to: _Target, card: CardInfo) -> Published:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=to.secret, library_name="emlc", library_version=__version__)
    api.create_repo(to.repo, repo_type="dataset", private=True if to.private else None, exist_ok=True)
    if to.branch:
        api.create_branch(to.repo, repo_type="dataset", branch=to.branch, exist_ok=True)
    sizes = ShardSizes()
    with tempfile.TemporaryDirectory(prefix="emlc-push-") as tmp:
        shards = [_uploaded(api, to, path, sizes) for path in iter_shards(dataset, Path(tmp), split)]
        readme = CommitOperationAdd("README.md", dataset_card(run, dataset, split, sizes, record, card).encode())
        operations = [*shards, readme, *_stale_shards(api, to, split, {op.path_in_repo for op in shards})]
        changed = sum(dataset["label_changed"])
        log.info("committing %d shards and the card to %s", len(shards), to.repo)
        info = api.create_commit(to.repo, operations, repo_type="dataset", revision=to.branch,
                                 commit_message=f"emlc: cleaned labels ({changed} of {len(dataset)} changed)")
    url = str(getattr(info, "commit_url", None) or f"{api.endpoint}/datasets/{to.repo}")
    return Published(url, len(dataset), changed, sum(dataset["label_verified"]), [op.path_in_repo for op in (*shards, readme)])


def _uploaded(api: Any, to: _Target, path: Path, sizes: ShardSizes) -> Any:
    """One shard preuploaded; once the Hub holds it in LFS storage the commit only names it by its hash, so the
    local file is removed. A shard the Hub takes inline ("regular") stays until the commit reads it."""
    from huggingface_hub import CommitOperationAdd

    sizes.add(path)
    operation = CommitOperationAdd(path_in_repo=f"data/{path.name}", path_or_fileobj=str(path))
    log.info("uploading %s (%d bytes) to %s", operation.path_in_repo, path.stat().st_size, to.repo)
    api.preupload_lfs_files(to.repo, additions=[operation], repo_type="dataset", revision=to.branch)
    if getattr(operation, "_is_uploaded", False):
        path.unlink()
    return operation


def _stale_shards(api: Any, to: _Target, split: str, kept: set[str]) -> list[Any]:
    """Deletions of the split's shards from an earlier push that this one does not overwrite."""
    from huggingface_hub import CommitOperationDelete

    present = api.list_repo_files(to.repo, repo_type="dataset", revision=to.branch)
    return [CommitOperationDelete(p) for p in present if fnmatch.fnmatch(p, f"data/{split}-*") and p not in kept]


def _hub_error(repo: str, err: Exception, secret: str) -> HubError:
    first = (str(err).strip().splitlines() or [""])[0]
    server = getattr(err, "server_message", None)
    message = f"{first} {server}" if server and server not in first else first
    register_secret(secret)
    return HubError(f"push to {repo} failed ({type(err).__name__}: {redact(message)[:400]})")
