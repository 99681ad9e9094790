"""Label Studio's JSON task format, both ways: a run's images as tasks with emlc's label as a pre-annotation
(`emlc export RUN DEST --format label-studio`), and a Label Studio JSON export of the decisions read back as a
verified-set manifest (`--clean export.json`).

Tasks follow Label Studio's basic JSON format (`data` + `predictions`, each prediction a `model_version`, a
`score` and a `result` of one `choices` region: https://labelstud.io/guide/predictions). Every task's data
carries `emlc_key` (the run's path or id), which is how decisions come back."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from emlc_cli._version import __version__
from emlc_cli.run_folder import layout as run_folder
from emlc_cli.export.rows import read_image_rows
from emlc_cli.errors import DataError
from emlc_cli.jsonfile import read_json_file

FROM_NAME, TO_NAME = "label", "image"  # the control and object names of label_config()
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files URL: a path under LOCAL_FILES_DOCUMENT_ROOT
TASKS, CONFIG, STORAGE = "tasks.json", "label_config.xml", "storage.json"
MAX_EXPORT_BYTES = 1 << 30  # a decisions file larger than this is refused, not read into memory


def label_config(classes: list[str]) -> str:
    """The labeling interface the tasks are written for: one image, one single choice among the run's classes."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in classes)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n{choices}\n'
            "  </Choices>\n</View>\n")


def tasks(run: Path, url_prefix: Optional[str] = None, document_root: Optional[Path] = None) -> list[dict[str, Any]]:
    """One task per image of an image-folder run: the to-verify rows first (best first), then the rest, least
    confident first. `url_prefix` + the image's path under DATA makes its URL; without it, Label Studio's
    local-files URL of the path under `document_root` (default: DATA's parent; see `storage`)."""
    root = run_folder.image_folder_root(run, "a Label Studio export (tasks point at image files)")
    under = None if url_prefix is not None else _relative_root(root, document_root or root.resolve().parent)
    rows = read_image_rows(run, root)
    first = [r["path"] for r in run_folder.read_to_verify(run)]
    rank = {path: i for i, path in enumerate(first)}
    ordered = sorted(rows, key=lambda r: (rank.get(r["path"], len(rank)), float(r["confidence"])))
    return [_task(row, _url(under, row["path"], url_prefix), row["path"] in rank) for row in ordered]


def storage(run: Path, document_root: Optional[Path] = None) -> dict[str, Any]:
    """What Label Studio needs to serve the tasks' images: its two environment variables and the project's Local
    Files storage (a folder strictly under the document root, which Label Studio requires: DATA itself)."""
    root = run_folder.image_folder_root(run, "a Label Studio export (tasks point at image files)").resolve()
    document_root = Path(document_root or root.parent).resolve()
    _relative_root(root, document_root)
    return {"env": {"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                    "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root)},
            "local_files_storage": {"path": str(root), "use_blob_urls": False}}


def _relative_root(root: Path, document_root: Path) -> str:
    """DATA's path under the document root, which must hold it strictly (Label Studio refuses a storage that is
    the document root itself)."""
    root, document_root = root.resolve(), Path(document_root).resolve()
    if document_root not in root.parents:
        raise DataError(f"--document-root {document_root} must be a folder above the run's data folder {root}, "
                        "as Label Studio serves only storages under its LOCAL_FILES_DOCUMENT_ROOT")
    return root.relative_to(document_root).as_posix()


def _task(row: dict[str, str], url: str, to_verify: bool) -> dict[str, Any]:
    result = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [row["corrected_label"]]}}
    data = {"image": url, "emlc_key": row["path"], "given_label": row["label"], "emlc_label": row["corrected_label"],
            "changed": row["changed"] == "1", "to_verify": to_verify, "split": row["split"]}
    return {"data": data, "predictions": [{"model_version": f"emlc {__version__}", "score": float(row["confidence"]),
                                           "result": [result]}]}


def _url(under: Optional[str], path: str, prefix: Optional[str]) -> str:
    if prefix is not None:
        return prefix + quote(path)
    return LOCAL_FILES + quote(f"{under}/{path}")


def read_decisions(path: Path) -> list[tuple[str, str, int]]:
    """(key, label, task number) for every task of a Label Studio JSON export with a choice made: the last
    annotation that was not cancelled; tasks nobody labelled are left out. The key is the task's `emlc_key`."""
    tasks_in = _load(path)
    rows = []
    for number, task in enumerate(tasks_in, start=1):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DataError("not a Label Studio task (no 'data' object)", path=path, row=number)
        value = task["data"].get("emlc_key")
        if not isinstance(value, str) or not value:
            raise DataError("task has no 'emlc_key' (tasks must come from `emlc export --format label-studio`)",
                            path=path, row=number)
        label = _chosen(task, path, number)
        if label is not None:
            rows.append((value, label, number))
    if not rows:
        raise DataError("no task has an annotation with a choice", path=path)
    return rows


def _load(path: Path) -> list[Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a regular file", path=path)
    if path.stat().st_size > MAX_EXPORT_BYTES:
        raise DataError(f"larger than {MAX_EXPORT_BYTES >> 20} MB", path=path)
    loaded = read_json_file(path, "not a Label Studio JSON export", encoding="utf-8-sig")
    if not isinstance(loaded, list):
        raise DataError("not a Label Studio JSON export (expected a list of tasks)", path=path)
    return loaded


def _chosen(task: dict[str, Any], path: Path, number: int) -> Optional[str]:
    kept = [a for a in _annotations(task, path, number) if not a.get("was_cancelled")]
    for annotation in reversed(kept):
        for region in annotation.get("result") or []:
            choices = region.get("value", {}).get("choices")
            if region.get("type") == "choices" and isinstance(choices, list) and choices:
                if len(choices) != 1 or not isinstance(choices[0], str):
                    raise DataError("an annotation must choose exactly one class", path=path, row=number)
                return choices[0]
    return None


def _annotations(task: dict[str, Any], path: Path, number: int) -> list[dict[str, Any]]:
    """The task's annotations, checked to have Label Studio's shape: a list of objects, each with a `result`
    list of region objects whose `value` is an object. Anything else is one DataError naming the task and where."""
    annotations = task.get("annotations")
    if annotations is None:
        return []
    if not isinstance(annotations, list):
        raise DataError(f"'annotations' is {_kind(annotations)}, not a list", path=path, row=number)
    for a, annotation in enumerate(annotations, start=1):
        if not isinstance(annotation, dict):
            raise DataError(f"annotation {a} is {_kind(annotation)}, not an object", path=path, row=number)
        result = annotation.get("result")
        if result is not None and not isinstance(result, list):
            raise DataError(f"annotation {a}: 'result' is {_kind(result)}, not a list", path=path, row=number)
        for r, region in enumerate(result or [], start=1):
            value = region.get("value", {}) if isinstance(region, dict) else None
            if not isinstance(value, dict):
                shape = f": 'value' is {_kind(value)}" if isinstance(region, dict) else f" is {_kind(region)}"
                raise DataError(f"annotation {a}, result {r}{shape}, not an object", path=path, row=number)
    return annotations


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"
