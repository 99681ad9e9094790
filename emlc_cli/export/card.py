"""The dataset card `emlc push` publishes (README.md: YAML metadata and a body), and what the publisher adds
to it (`--license`, `--card-notes FILE`). A card is public: a local source is named by its last path part only,
and local paths in the recorded command and the recipe are cut to their last part."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from emlc_cli._version import __version__
from emlc_cli.run_folder import layout as run_folder
from emlc_cli.errors import DataError, EmlcError

LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")  # a Hub licence id: mit, apache-2.0, cc-by-4.0, other
MAX_NOTES_BYTES = 1 << 20
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
KIND_WORDS = {"imagefolder": "a local image folder", "metadata_folder": "a local image folder with metadata.csv",
              "parquet": "local parquet data", "hf_disk": "a local save_to_disk dataset", "npy": "a local .npy feature file"}


@dataclass(frozen=True)
class CardInfo:
    """What the person publishing adds to the dataset card: a licence id and a Markdown file of notes
    (description, citation, how the verified set was made)."""

    license: Optional[str] = None
    notes_file: Optional[Path] = None

    def checked(self) -> "CardInfo":
        """Refuse a malformed licence or an unreadable notes file before anything is written."""
        if self.license is not None and not LICENSE.match(self.license.strip().lower()):
            raise EmlcError(f"--license '{self.license}': expected a Hub licence id such as mit, apache-2.0, "
                            "cc-by-4.0 or other")
        self.notes()
        return self

    def notes(self) -> str:
        if self.notes_file is None:
            return ""
        path = Path(self.notes_file)
        if not path.is_file():
            raise DataError("--card-notes: file not found" if not path.exists() else "--card-notes: not a file", path=path)
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_NOTES_BYTES + 1)
            if len(data) > MAX_NOTES_BYTES:
                raise DataError("--card-notes: larger than 1 MiB; card notes are a short Markdown text", path=path)
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError("--card-notes: not UTF-8 text", path=path) from None
        except OSError as err:
            raise DataError(f"--card-notes: cannot read ({err.strerror or err})", path=path) from None


@dataclass
class ShardSizes:
    """What the card says about the data's size, added up shard by shard as each is written (a push deletes a
    shard once it is uploaded). `download`: the files' bytes; `uncompressed`: the data as the shards hold it,
    images embedded, from each Parquet footer: what `dataset_size` means (an image folder's table holds paths)."""
    download: int = 0
    uncompressed: int = 0

    def add(self, shard: Path) -> None:
        import pyarrow.parquet as pq

        footer = pq.ParquetFile(shard).metadata
        self.download += shard.stat().st_size
        self.uncompressed += sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups))


def dataset_card(run: Path, dataset: Any, split: str, sizes: ShardSizes, record: dict[str, Any],
                 card: Optional[CardInfo] = None) -> str:
    """README.md: YAML metadata (features with the class names, splits, configs, tags, size, source, licence) and
    a body with the notes, the cleaning summary, the change matrix, the recipe and the command. A card is public:
    local paths are cut to their last part."""
    card = card or CardInfo()
    summary_file = run / run_folder.SUMMARY
    summary = run_folder.read_json(summary_file, required=False)
    recipe = public_text(run_folder.read_recipe_text(run))
    yaml = card_yaml(dataset, split, sizes.download, record, card.license, dataset_size=sizes.uncompressed)
    return f"---\n{yaml}---\n\n{card_body(dataset, summary, recipe, record, card.notes())}"


def card_yaml(dataset: Any, split: str, download_size: int, record: dict[str, Any], license: Optional[str] = None,
              dataset_size: Optional[int] = None) -> str:
    """The card's YAML, as datasets.push_to_hub writes it (dataset_info + configs), plus tags, size category,
    source dataset and licence. `dataset_size`: the shards' uncompressed bytes (default: the table's own)."""
    from datasets import Image
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    images = any(isinstance(f, Image) for f in dataset.features.values())
    data = DatasetCardData(pretty_name=_pretty_name(record), tags=["emlc", "label-cleaning", "noisy-labels"],
                           task_categories=["image-classification"] if images else None,
                           license=license.strip().lower() if license else None, size_categories=[size_category(len(dataset))],
                           source_datasets=[f"extended|{record['location'][len('hf://'):]}" if _is_hub(record) else "original"])
    size = int(dataset.data.nbytes) if dataset_size is None else dataset_size
    info = DatasetInfo(features=dataset.features, splits=SplitDict(), download_size=download_size, dataset_size=size)
    info.splits.add(SplitInfo(name=split, num_bytes=size, num_examples=len(dataset)))
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    MetadataConfigs({"default": {"data_files": [{"split": split, "path": f"data/{split}-*"}]}}).to_dataset_card_data(data)
    return data.to_yaml() + "\n"


def _pretty_name(record: dict[str, Any]) -> str:
    location = str(record.get("location") or record.get("root") or "dataset")
    name = location.removeprefix("hf://").rstrip("/").split("/")[-1]
    return f"{re.sub(r'[.](parquet|npy)$', '', name)} (labels cleaned with emlc)"


def size_category(rows: int) -> str:
    """The Hub's size_categories value for `rows` rows."""
    return next((name for limit, name in SIZES if rows < limit), "n>1B")


def _is_hub(record: dict[str, Any]) -> bool:
    return record.get("kind") == "hub" and str(record.get("location", "")).startswith("hf://")


def _source_words(record: dict[str, Any]) -> str:
    """`hf://owner/name` for a Hub source; a local one by its name only (`images`, a local image folder)."""
    if _is_hub(record):
        return f"`{record['location']}`"
    name = _last_part(str(record.get("location") or record.get("root") or "dataset"))
    return f"`{name}` ({KIND_WORDS.get(str(record.get('kind')), 'local data')})"


def _last_part(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1] or path


def public_command(command: str) -> str:
    """A recorded command with every local path cut to its last part (`/home/me/bench/clean.csv` -> `clean.csv`)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return "(not recorded)"
    return shlex.join(_public_word(word) for word in words)


def _public_word(word: str) -> str:
    key, sep, value = word.partition("=")
    if sep and not word.startswith("-") and "." in key:  # an override: section.key=value
        return f"{key}={_public_word(value)}"
    if word.startswith(("hf://", "-")) or not re.search(r"[\\/]", word):
        return word
    return _last_part(word)


def public_text(text: str) -> str:
    """YAML text (the recipe) with absolute local paths in values cut to their last part."""
    return re.sub(r"(?m)^(\s*[\w.-]+:\s*['\"]?)((?:/|[A-Za-z]:[\\/])[^'\"\n]*)", lambda m: m.group(1) + _last_part(m.group(2)), text)


def card_body(dataset: Any, summary: dict[str, Any], recipe: str, record: dict[str, Any], notes: str = "") -> str:
    rows, changed, verified = len(dataset), sum(dataset["label_changed"]), sum(dataset["label_verified"])
    split = f", split `{record['split']}`" if record.get("split") else ""
    lines = [
        f"# {_pretty_name(record)}", "",
        f"The data of {_source_words(record)}{split}, with labels corrected by emlc (Enhanced Meta Label Correction).", "",
        *([notes, ""] if notes else []),
        "| column | meaning |", "| --- | --- |",
        "| `label` | the corrected label |", "| `original_label` | the label before cleaning |",
        "| `label_confidence` | emlc's confidence in `label` (1 for verified rows, 0 for rows it could not read) |",
        "| `label_changed` | `label` differs from `original_label` |",
        "| `label_verified` | the row belongs to the verified subset: its label was checked by hand and kept |", "",
        "## Cleaning summary", "", "| | |", "| --- | --- |",
        f"| rows | {rows} |", f"| verified rows | {verified} |", f"| labels changed | {changed} |",
    ]
    lines += _summary_rows(summary)
    lines += ["", *_change_matrix(summary), "", "## Recipe", "", "```yaml", recipe.strip(), "```", "",
              "## Command", "", "```sh", public_command(record["command"]) if record.get("command") else "(not recorded)",
              "```", ""]
    return "\n".join(lines)


def _summary_rows(summary: dict[str, Any]) -> list[str]:
    rows = []
    if "noisy" in summary:
        rows.append(f"| rows cleaned (noisy pool) | {summary['noisy']} |")
    if summary.get("estimated_noise_rate") is not None:
        rows.append(f"| estimated noise rate | {summary['estimated_noise_rate']:.1%} |")
    estimate = summary.get("label_accuracy")
    if isinstance(estimate, dict) and estimate.get("given") and estimate.get("corrected"):
        rows.append(f"| label accuracy, estimated (given -> corrected) | {estimate['given']['estimate']:.1%} -> "
                    f"{estimate['corrected']['estimate']:.1%} |")
    if "best_holdout_score" in summary:
        rows.append(f"| best holdout accuracy | {summary['best_holdout_score']:.3f} |")
    if summary.get("skipped"):
        rows.append(f"| unreadable rows (label kept) | {len(summary['skipped'])} |")
    rows.append(f"| emlc version | {summary.get('versions', {}).get('emlc', __version__)} |")
    return rows


def _change_matrix(summary: dict[str, Any]) -> list[str]:
    matrix, classes = summary.get("change_matrix"), summary.get("classes")
    if not matrix or not classes:
        return []
    lines = ["## Change matrix", "", "Rows: original label; columns: corrected label (noisy pool).", "",
             "| original \\ corrected | " + " | ".join(classes) + " |", "| --- |" + " ---: |" * len(classes)]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(classes, matrix)]
    return lines
