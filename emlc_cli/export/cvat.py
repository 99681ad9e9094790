"""CVAT's XML annotation format, "CVAT for images 1.1" (docs.cvat.ai/docs/other/xml_format): an image-folder run's
labels as image-level tags, for `emlc export RUN DEST --format cvat`.

DEST/annotations.xml holds one <image> per image (`name` is the path under DATA, so upload DATA's files to the
task keeping their folders, then "Upload annotations" in the CVAT 1.1 format) with one <tag>: emlc's label,
`source="auto"`, and the attributes `given_label`, `confidence` and `changed`, declared on every label in <meta>
as CVAT requires. Images are listed to-verify rows first, then the rest least confident first.

CVAT keeps an uploaded tag only if the task already declares its label and attributes (it drops the others
silently): DEST/labels.json is the task's labels in the form its task creation takes (the API's `labels`, or the
"Raw" labels editor). CVAT matches an <image> to a frame by its name (with or without the extension), else by its
`id` as the frame number: `id` is the image's frame number in a task made from DATA's images sorted by name
(CVAT's default "lexicographical" sorting), and DEST/frames.txt lists the names in that order, to compare with the
task's frame list. `name_warnings` names what would defeat the matching."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from emlc_cli.run_folder import layout as run_folder
from emlc_cli.export.rows import read_image_rows
from emlc_cli.data.imagefolder import check_inside
from emlc_cli.errors import DataError, OutputError

ANNOTATIONS, LABELS, FRAMES = "annotations.xml", "labels.json", "frames.txt"
VERSION = "1.1"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
ATTRIBUTES = (("given_label", "select"), ("confidence", "text"), ("changed", "checkbox"))


def annotations(run: Path, task_name: str) -> tuple[ET.ElementTree, int, int]:
    """The XML tree, the number of images and of changed labels."""
    root = run_folder.image_folder_root(run, "a CVAT export (CVAT tasks hold image files)")
    classes = run_folder.read_json(Path(run) / run_folder.config_file(run_folder.STUDENT))["classes"]
    for name in classes:
        _checked(name, "class name")
    rows = _ordered(run, root)
    top = ET.Element("annotations")
    ET.SubElement(top, "version").text = VERSION
    top.append(_meta(task_name, len(rows), classes))
    frame = {name: number for number, name in enumerate(frame_names([row["path"] for _, row in rows]))}
    for line, row in rows:
        top.append(_image(frame[row["path"]], row, root, (Path(run) / run_folder.CORRECTED, line)))
    ET.indent(top)
    return ET.ElementTree(top), len(rows), sum(row["changed"] == "1" for _, row in rows)


def frame_names(paths: list[str]) -> list[str]:
    """The frame names of a task made from these images, in CVAT's frame order ("lexicographical" sorting)."""
    return sorted(paths)


def labels_spec(classes: list[str]) -> list[dict[str, object]]:
    """The task's labels as CVAT's task creation takes them: one tag label per class, each declaring the three
    attributes the annotations carry (the same specs as <meta>)."""
    def attribute(name: str, kind: str) -> dict[str, object]:
        values = {"select": list(classes), "text": [""], "checkbox": ["false"]}[kind]
        return {"name": name, "mutable": False, "input_type": kind, "default_value": values[0], "values": values}

    return [{"name": name, "type": "tag", "attributes": [attribute(a, kind) for a, kind in ATTRIBUTES]} for name in classes]


def name_warnings(paths: list[str], summary: dict[str, object]) -> list[str]:
    """What would make CVAT put a tag on the wrong frame: two images whose names differ only in the extension
    (CVAT matches names with or without it), and files under DATA the run left out (unreadable or not images:
    a task made from DATA holds them, so frame numbers, CVAT's fallback, shift)."""
    stems: dict[str, list[str]] = {}
    for path in paths:
        stems.setdefault(Path(path).with_suffix("").as_posix(), []).append(path)
    twins = [names for names in stems.values() if len(names) > 1]
    warnings = [f"{len(twins)} image names differ only in the extension ({', '.join(twins[0][:2])}): CVAT matches names "
                "without the extension too, so their tags may swap; rename one of each pair"] if twins else []
    ignored = summary.get("ignored_files")
    left_out = len(summary.get("skipped") or {}) + (ignored if isinstance(ignored, int) else 0)
    if left_out:
        warnings.append(f"{left_out} files under DATA are not in the run (skipped or not images): leave them out of the "
                        f"CVAT task, or its frame numbers will differ from {FRAMES}'s (names still match)")
    return warnings


def _checked(value: str, what: str) -> str:
    """XML 1.0 cannot hold most control characters, escaped or not (a folder name can)."""
    if _NOT_XML.search(value):
        raise OutputError(f"{what} {value!r} has a control character that CVAT's XML cannot hold; rename it")
    return value


def _ordered(run: Path, root: Path) -> list[tuple[int, dict[str, str]]]:
    """(corrected.csv line, row): to-verify rows first (best first), then the rest least confident first."""
    rows = enumerate(read_image_rows(run, root), start=2)
    rank = {r["path"]: i for i, r in enumerate(run_folder.read_to_verify(run))}
    return sorted(rows, key=lambda item: (rank.get(item[1]["path"], len(rank)), float(item[1]["confidence"])))


def _meta(task_name: str, size: int, classes: list[str]) -> ET.Element:
    meta = ET.Element("meta")
    task = ET.SubElement(meta, "task")
    for key, value in (("name", task_name), ("size", str(size)), ("mode", "annotation"), ("overlap", "0")):
        ET.SubElement(task, key).text = value
    labels = ET.SubElement(task, "labels")
    for name in classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "tag"
        attributes = ET.SubElement(label, "attributes")
        for attribute, kind in ATTRIBUTES:
            attributes.append(_attribute_spec(attribute, kind, classes))
    return meta


def _attribute_spec(name: str, kind: str, classes: list[str]) -> ET.Element:
    values = {"select": "\n".join(classes), "text": "", "checkbox": "false"}[kind]
    spec = ET.Element("attribute")
    for key, value in (("name", name), ("mutable", "False"), ("input_type", kind),
                       ("default_value", classes[0] if kind == "select" else values), ("values", values)):
        ET.SubElement(spec, key).text = value
    return spec


def _image(number: int, row: dict[str, str], root: Path, listed: tuple[Path, int]) -> ET.Element:
    name = _checked(row["path"], "image path")
    width, height = _size(check_inside(root, name, *listed))
    image = ET.Element("image", {"id": str(number), "name": name, "width": str(width), "height": str(height)})
    tag = ET.SubElement(image, "tag", {"label": row["corrected_label"], "source": "auto"})
    for name, value in (("given_label", row["label"]), ("confidence", f"{float(row['confidence']):.4f}"),
                        ("changed", "true" if row["changed"] == "1" else "false")):
        ET.SubElement(tag, "attribute", {"name": name}).text = value
    return image


def _size(path: Path) -> tuple[int, int]:
    """Width and height from the file's header (CVAT 1.1 requires them on every image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read the image size ({str(err)[:80]})", path=path) from None


def task_name(run: Path) -> str:
    """The task name written into <meta>: the run folder's name."""
    return Path(run).resolve().name or "emlc"
