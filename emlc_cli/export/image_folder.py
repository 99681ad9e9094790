"""`emlc export RUN DEST --format ...`: a corrected copy of an image-folder dataset, each image under its
corrected class (hard links where possible, else copies), or the run's labels for a labeling or curation tool
(Label Studio tasks, a FiftyOne dataset, CVAT annotations). The data folder is only read."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from emlc_cli.run_folder import layout as run_folder
from emlc_cli.export.rows import read_image_rows
from emlc_cli.data.imagefolder import check_inside
from emlc_cli.data.kinds import run_source
from emlc_cli.errors import EmlcError, OutputError
from emlc_cli.export.hub import Published
from emlc_cli.run_folder.writer import RunDir, check_out_dir, run_inputs

log = logging.getLogger(__name__)


def export_imagefolder(run: Path, dest: Path, overwrite: bool = False, data: str | None = None) -> Published:
    """DEST/<corrected class>/<file>: a corrected copy of an image-folder dataset (hard links where possible);
    `data`: where the run's data folder is now, if it moved."""
    record = run_source(run, data)
    if not run_folder.is_folder_kind(str(record.get("kind"))):
        raise EmlcError(f"export --format imagefolder copies an image folder; this run read a '{record.get('kind')}' "
                        "source: use `emlc push RUN --to DIR` instead")
    root = Path(record.get("location") or record["root"])
    check_out_dir(Path(dest), root, overwrite, protect=run_inputs(run), option="DEST")
    rows = read_image_rows(run, root)
    nested = not record.get("labels_csv")  # class folders: drop the given class folder from the path
    with RunDir(Path(dest), kind="export", option="DEST") as staged:
        taken: set[str] = set()
        for number, row in enumerate(rows, start=2):
            source = check_inside(root, row["path"], Path(run) / run_folder.CORRECTED, number)
            target = _export_name(row, nested, taken)
            with staged.writing(staged.path / target):
                _link_or_copy(source, staged.path / target)
        final = staged.commit()
    changed = sum(row["changed"] == "1" for row in rows)
    return Published(str(final), len(rows), changed, sum(row["split"] == "clean" for row in rows))


def export_label_studio(run: Path, dest: Path, overwrite: bool = False, url_prefix: str | None = None,
                        document_root: Path | None = None) -> Published:
    """DEST/tasks.json (Label Studio tasks, emlc's label as a pre-annotation, to-verify rows first),
    DEST/label_config.xml (the project's labeling interface) and, for local-files URLs, DEST/storage.json (the
    environment Label Studio must run with and the project's Local Files storage: `emlc label-studio DEST`)."""
    import json

    from emlc_cli.export import label_studio as labelstudio

    _check_dest(run, dest, overwrite)
    written = labelstudio.tasks(run, url_prefix, document_root)
    settings = labelstudio.storage(run, document_root) if url_prefix is None else None
    classes = run_folder.read_json(Path(run) / run_folder.config_file(run_folder.STUDENT))["classes"]
    with RunDir(Path(dest), kind="export", option="DEST") as staged:
        staged.write_text(labelstudio.TASKS, json.dumps(written, indent=1) + "\n")
        staged.write_text(labelstudio.CONFIG, labelstudio.label_config(classes))
        if settings is not None:
            staged.write_text(labelstudio.STORAGE, json.dumps(settings, indent=1) + "\n")
        final = staged.commit()
    changed = sum(task["data"]["changed"] for task in written)
    return Published(str(final), len(written), changed, sum(task["data"]["split"] == "clean" for task in written))


def export_fiftyone(run: Path, dest: Path, overwrite: bool = False) -> Published:
    """DEST/samples.json + DEST/metadata.json in FiftyOne's dataset format (fiftyone_format); fiftyone itself is
    not needed to write it: `fo.Dataset.from_dir(DEST, dataset_type=fo.types.FiftyOneDataset)` loads it."""
    import json

    from emlc_cli.export import fiftyone as fiftyone_format

    _check_dest(run, dest, overwrite)
    written = fiftyone_format.samples(run)
    classes = run_folder.read_json(Path(run) / run_folder.config_file(run_folder.STUDENT))["classes"]
    with RunDir(Path(dest), kind="export", option="DEST") as staged:
        staged.write_text(fiftyone_format.SAMPLES, json.dumps({"samples": written}) + "\n")
        staged.write_text(fiftyone_format.METADATA, json.dumps(fiftyone_format.metadata(classes), indent=1) + "\n")
        final = staged.commit()
    return Published(str(final), len(written), sum(s["changed"] for s in written),
                     sum(s["split"] == "clean" for s in written))


def export_cvat(run: Path, dest: Path, overwrite: bool = False) -> Published:
    """DEST/annotations.xml: emlc's labels as image tags in CVAT for images 1.1 (cvat); DEST/labels.json: the
    labels and attribute specs the task must declare before the upload; DEST/frames.txt: the image names in the
    task's frame order. What would defeat CVAT's name matching is logged as a warning."""
    import io
    import json

    from emlc_cli.export import cvat

    _check_dest(run, dest, overwrite)
    tree, images, changed = cvat.annotations(run, cvat.task_name(run))
    classes = run_folder.read_json(Path(run) / run_folder.config_file(run_folder.STUDENT))["classes"]
    rows = run_folder.read_corrected(run)
    for warning in cvat.name_warnings([row["path"] for row in rows], run_folder.read_json(Path(run) / run_folder.SUMMARY, required=False)):
        log.warning(warning)
    buffer = io.BytesIO()
    tree.write(buffer, encoding="utf-8", xml_declaration=True)
    with RunDir(Path(dest), kind="export", option="DEST") as staged:
        staged.write_text(cvat.ANNOTATIONS, buffer.getvalue().decode("utf-8") + "\n")
        staged.write_text(cvat.LABELS, json.dumps(cvat.labels_spec(classes), indent=1) + "\n")
        staged.write_text(cvat.FRAMES, "".join(name + "\n" for name in cvat.frame_names([row["path"] for row in rows])))
        final = staged.commit()
    verified = sum(row["split"] == "clean" for row in rows)
    return Published(str(final), images, changed, verified)


def _check_dest(run: Path, dest: Path, overwrite: bool) -> None:
    record = run_folder.read_source_record(run)
    check_out_dir(Path(dest), Path(record.get("location") or record.get("root") or run), overwrite,
                  protect=run_inputs(run), option="DEST")


def _export_name(row: dict[str, str], nested: bool, taken: set[str]) -> str:
    label = row["corrected_label"]
    if label in ("", ".", "..") or "/" in label or "\\" in label:
        raise OutputError(f"class name '{label}' cannot be a folder name")
    parts = row["path"].split("/")
    rest = Path(*(parts[1:] if nested and len(parts) > 1 else parts))
    name = f"{label}/{rest.as_posix()}"
    if name in taken:  # two files of the same name from different given classes
        name = f"{label}/{rest.with_name(f'{rest.stem}.from-{parts[0]}{rest.suffix}').as_posix()}"
    taken.add(name)
    return name


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
