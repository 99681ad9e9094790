"""The HTML of `emlc review`: one file, thumbnails inlined as data URIs, vanilla JS, nothing fetched.

Every card is server-rendered (the page reads without JS); the script only filters, paginates, records
decisions (kept in localStorage per run) and downloads them as a `path,label,picked` clean manifest (picked=1:
emlc chose those images, so they train but do not measure the noise; see verified.py)."""
from __future__ import annotations

import datetime as _dt
from html import escape
from typing import Any, Callable

from emlc_cli._version import __version__
from emlc_cli.run_folder import layout as run_folder
from emlc_cli.review.report_assets import CSS, JS
from emlc_cli.review.run_view import Item, RunView
from emlc_cli.review.thumbnails import Thumbnails

Thumb = Callable[[str], str]
PAGE_SIZE = 48
SECTIONS = {
    "changed": ("Changed labels", f"most confident first; the full list is {run_folder.CORRECTED}"),
    "to_verify": ("Verify next", "the images whose verification would most help the next round "
                                 f"({run_folder.TO_VERIFY}), best first"),
    "uncertain": ("Least certain unchanged", "kept labels with the lowest confidence first"),
}


def e(value: Any) -> str:
    return escape(str(value), quote=True)


def render_report(view: RunView, thumbs: Thumbnails) -> str:
    """The whole page. Galleries are rendered first so the summary can count unreadable images."""
    galleries = "\n".join(_gallery(name, items, view, thumbs.data_uri) for name, items in view.sections())
    parts = [_header(view), _summary(view, len(thumbs.missing)), _matrix(view), _toolbar(view), galleries, _footer(view)]
    body = "\n".join(parts)
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="emlc-run" content="{e(view.fingerprint)}">\n'
            f'<meta name="emlc-page-size" content="{PAGE_SIZE}">\n'
            f'<meta name="emlc-manifest-key" content="{view.manifest_key}">\n'
            f"<title>emlc review: {e(view.name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
            f"<script>{JS}</script>\n</body>\n</html>\n")


def _header(view: RunView) -> str:
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<header><h1>emlc review: <span id="run-name">{e(view.name)}</span></h1>'
            f'<p class="muted">{e(view.run.resolve())} &middot; written {stamp} by emlc {e(__version__)}</p>'
            "<noscript><p class=\"notice\">JavaScript is off: every card is shown, but filters, pages and "
            "decisions need JavaScript.</p></noscript></header>")


def _summary(view: RunView, missing: int) -> str:
    s = view.summary
    noisy, changed = s.get("noisy", 0), s.get("changed", view.totals["changed"])
    stats = [
        ("images", f"{s.get('images', view.totals['rows']):,}"),
        ("noisy pool", f"{noisy:,}"),
        ("verified", f"{s.get('verified', 0):,}"),
        ("labels changed", f"{changed:,}"),
        ("estimated noise", _percent(s.get("estimated_noise_rate", 0.0))),
        *_estimate_stats(s.get("label_accuracy")),
        ("recipe", s.get("recipe", "?")),
        ("rule", s.get("rule", "?")),
        ("training", f"{s.get('train_seconds', 0):.0f} s, {s.get('images_per_s', 0):,.0f} img/s on {s.get('device', '?')}"),
        ("whole run", f"{s.get('wall_seconds', s.get('train_seconds', 0)):.0f} s"),
        ("best holdout score", _number(s.get("best_holdout_score"))),
    ]
    cells = "".join(f'<div class="stat" data-key="{e(k)}"><dt>{e(k)}</dt><dd>{e(v)}</dd></div>' for k, v in stats)
    notes = [f'<p class="notice">{e(w)}</p>' for w in s.get("warnings", [])]
    if s.get("skipped"):
        notes.append(f'<p class="notice">{len(s["skipped"])} unreadable images were skipped by the run.</p>')
    if missing:
        kind = view.source.get("kind", "unknown")
        notes.append(f'<p class="notice">{missing} images could not be read from the data source ({e(kind)}); '
                     "they show as grey squares.</p>")
    return (f'<section id="summary"><h2>Summary</h2><dl class="stats">{cells}</dl>{"".join(notes)}'
            f'<div class="columns">{_per_class(view)}<div>{_epochs(s)}{_recipe(view)}</div></div></section>')


def _percent(value: Any) -> str:
    return "unknown" if value is None else f"{value:.1%}"


def _estimate_stats(estimate: object) -> list[tuple[str, str]]:
    """Estimated label accuracy before and after (no truth needed), when the run's rule gives it."""
    try:
        given, fixed = estimate["given"], estimate["corrected"]  # type: ignore[index]
        return [("label accuracy, given (est.)", f"{given['estimate']:.1%} ({given['low']:.1%}-{given['high']:.1%})"),
                ("label accuracy, corrected (est.)", f"{fixed['estimate']:.1%} ({fixed['low']:.1%}-{fixed['high']:.1%})")]
    except (TypeError, KeyError, ValueError):
        return []


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _noise_unknown(summary: dict[str, Any]) -> bool:
    """The run could not estimate the noise (no rule was safe, or no estimate): its changes say nothing of it."""
    estimate = summary.get("label_accuracy")
    too_weak = isinstance(estimate, dict) and bool(estimate.get("too_weak"))
    return too_weak or ("estimated_noise_rate" in summary and summary["estimated_noise_rate"] is None)


def _per_class(view: RunView) -> str:
    changed = view.summary.get("changed_per_class", {})
    unknown = _noise_unknown(view.summary)
    rows = []
    for c in view.classes:
        noisy, moved = view.noisy_per_class.get(c, 0), int(changed.get(c, 0))
        rate = "n/a" if not noisy else "unknown" if unknown else f"{moved / noisy:.1%}"
        rows.append(f'<tr data-class="{e(c)}"><th>{e(c)}</th><td>{noisy:,}</td><td>{moved:,}</td><td>{rate}</td></tr>')
    return ('<table class="per-class"><caption>Estimated noise per class (by given label)</caption>'
            "<thead><tr><th>class</th><th>noisy</th><th>changed</th><th>est. noise</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _epochs(summary: dict[str, Any]) -> str:
    epochs = summary.get("epochs") or []
    if not epochs:
        return ""
    first = 1 if any(ep.get("epoch") == 0 for ep in epochs) else 0  # runs before 0.2 numbered epochs from 0
    rows = "".join(
        f"<tr><td>{ep.get('epoch', 0) + first}</td><td>{e(ep.get('phase', ''))}</td>"
        f"<td>{ep.get('student_holdout_acc', 0):.3f}</td><td>{ep.get('teacher_holdout_acc', 0):.3f}</td>"
        f"<td>{ep.get('seconds', 0):.1f}</td><td>{'best' if ep.get('best') else ''}</td></tr>"
        for ep in epochs)
    return ("<details><summary>Training timeline</summary><table class=\"epochs\"><thead><tr><th>epoch</th><th>phase</th>"
            "<th>student holdout</th><th>teacher holdout</th><th>seconds</th><th></th></tr></thead>"
            f"<tbody>{rows}</tbody></table></details>")


def _recipe(view: RunView) -> str:
    if not view.recipe_text:
        return ""
    return f"<details><summary>Recipe ({run_folder.RECIPE})</summary><pre>{e(view.recipe_text)}</pre></details>"


def _matrix(view: RunView) -> str:
    matrix = view.summary.get("change_matrix") or []
    classes = view.classes
    if len(matrix) != len(classes):
        return ""
    off = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j] or [0]
    diag = [matrix[i][i] for i in range(len(classes))] or [0]
    head = "".join(f'<th scope="col">{e(c)}</th>' for c in classes)
    body = []
    for i, row in enumerate(matrix):
        cells = "".join(_matrix_cell(classes[i], classes[j], v, max(diag) if i == j else max(off), i == j)
                        for j, v in enumerate(row))
        body.append(f'<tr><th scope="row">{e(classes[i])}</th>{cells}</tr>')
    return ('<section id="matrix"><h2>Given &rarr; corrected</h2>'
            '<p class="muted">Noisy pool: rows are the given label, columns the corrected label. '
            "Click a cell to show those images.</p>"
            f'<div class="scroll"><table class="heatmap"><thead><tr><th>given \\ corrected</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div></section>")


def _matrix_cell(given: str, corrected: str, value: int, peak: int, diagonal: bool) -> str:
    alpha = 0.0 if not value or not peak else 0.12 + 0.88 * value / peak
    colour = f"rgba(70,110,170,{alpha:.2f})" if diagonal else f"rgba(214,69,48,{alpha:.2f})"
    ink = "#fff" if alpha > 0.55 else "#222"
    kind = "diag" if diagonal else "off"
    return (f'<td class="cell {kind}" data-given="{e(given)}" data-corrected="{e(corrected)}" data-count="{int(value)}" '
            f'style="background:{colour};color:{ink}" title="{e(given)} &rarr; {e(corrected)}: {int(value)}">{int(value):,}</td>')


def _toolbar(view: RunView) -> str:
    options = "".join(f'<option value="{e(c)}">{e(c)}</option>' for c in view.classes)
    select = lambda name, label: (f'<label>{label} <select id="filter-{name}" data-filter="{name}">'  # noqa: E731
                                  f'<option value="">any</option>{options}</select></label>')
    command = view.next_command()
    return ('<section id="toolbar"><div class="filters">'
            f'{select("class", "class")}{select("given", "given")}{select("corrected", "corrected")}'
            '<label>show <select id="filter-status" data-filter="status"><option value="">all</option>'
            '<option value="undecided">undecided</option><option value="decided">decided</option></select></label>'
            '<label>sort <select id="sort" data-filter="sort"><option value="listed">as listed</option>'
            '<option value="desc">confidence high&rarr;low</option><option value="asc">confidence low&rarr;high</option>'
            '</select></label><button type="button" id="reset-filters">reset filters</button></div>'
            '<div class="decisions"><span id="decision-count">0 decisions</span>'
            '<button type="button" id="download" class="primary">download decisions.csv</button>'
            '<button type="button" id="clear-decisions">clear</button></div>'
            '<p class="muted hint">Next round (run it where you saved decisions.csv): '
            f'<code id="next-command">{e(command)}</code></p></section>')


def _gallery(name: str, items: list[Item], view: RunView, thumb: Thumb) -> str:
    title, subtitle = SECTIONS[name]
    total = view.totals[name]
    cards = "\n".join(_card(item, name, n, view.classes, thumb) for n, item in enumerate(items))
    capped = f" (the first {len(items):,} of {total:,}; raise --top to include more)" if total > len(items) else ""
    pager = ('<nav class="pager"><button type="button" class="prev">&lsaquo; prev</button>'
             '<span class="page"></span><button type="button" class="next">next &rsaquo;</button>'
             '<span class="count"></span></nav>')
    return (f'<section class="gallery" id="{name.replace("_", "-")}" data-section="{name}" data-total="{total}">'
            f'<h2>{title} <span class="badge">{total:,}</span></h2><p class="muted">{subtitle}{capped}</p>'
            f'{pager}<div class="cards">{cards}</div><p class="empty" hidden>No image here matches the filters.</p>'
            f"{pager}</section>")


def _card(item: Item, section: str, n: int, classes: list[str], thumb: Thumb) -> str:
    name = f"d-{section}-{n}"
    p = e(item.path)
    if item.changed:
        labels = (f'<span class="given" title="given label">{e(item.given)}</span> &rarr; '
                  f'<span class="corrected" title="corrected label">{e(item.corrected)}</span>')
        choices = (_radio(name, item.corrected, "corrected label right", "corrected")
                   + _radio(name, item.given, "given label right", "given"))
    else:
        labels = f'<span class="kept" title="given label, kept">{e(item.given)}</span> (kept)'
        choices = _radio(name, item.given, "given label right", "given")
    others = "".join(f'<option value="{e(c)}">{e(c)}</option>' for c in classes)
    reason = f'<p class="reason">{e(item.reason)}</p>' if item.reason else ""
    return (f'<figure class="card" data-path="{p}" data-given="{e(item.given)}" data-corrected="{e(item.corrected)}" '
            f'data-confidence="{item.confidence:.4f}" data-order="{n}">'
            f'<img class="thumb" src="{thumb(item.path)}" alt="{p}">'
            f'<figcaption><p class="meta"><span class="path" title="{p}">{p}</span>'
            f'<span class="conf" title="confidence">{item.confidence:.2f}</span></p><p class="labels">{labels}</p>{reason}'
            f'<fieldset class="decision"><legend>your decision</legend>{choices}'
            f'<label><input type="radio" name="{name}" value="" data-choice="other"> neither: '
            f'<select class="other-label" aria-label="true label"><option value="">label&hellip;</option>{others}</select></label>'
            '<button type="button" class="undo" hidden>undo</button></fieldset></figcaption></figure>')


def _radio(name: str, value: str, text: str, choice: str) -> str:
    return f'<label><input type="radio" name="{name}" value="{e(value)}" data-choice="{choice}"> {text}</label>'


def _footer(view: RunView) -> str:
    return ('<footer class="muted"><p>Mark images, then <b>download decisions.csv</b>: it is a clean manifest '
            f"(<code>{view.manifest_key},label,picked</code>; paths are relative to the data folder; <code>picked=1</code>: "
            "emlc chose these images, so they train the teacher but are not counted as a random sample of the noise). Pass it to "
            "<code>emlc clean</code> with another <code>--clean</code> to start the next round with a larger verified set. Decisions are kept in this browser "
            f"until you clear them.</p><p>Report of {view.totals['rows']:,} rows; "
            f"at most {view.top:,} images per section.</p></footer>")
