"""The HTML of `emlc review`: one file, thumbnails inlined as data URIs, vanilla JS, nothing fetched.

Every card is server-rendered (the page reads without JS); the script only filters, paginates, records
decisions (kept in localStorage per run) and downloads them as a `path,label` clean manifest."""
from __future__ import annotations

import datetime as _dt
from html import escape
from typing import Any, Callable

from emlc_cli import __version__
from emlc_cli.review import Item, RunView, Thumbnails

Thumb = Callable[[str], str]
PAGE_SIZE = 48
SECTIONS = {
    "changed": ("Changed labels", "most confident first; the full list is corrected.csv"),
    "to_verify": ("Verify next", "the images whose verification would most help the next round (to_verify.csv), best first"),
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
            f'<meta name="emlc-manifest-key" content="{manifest_key(view)}">\n'
            f"<title>emlc review: {e(view.name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
            f"<script>{JS}</script>\n</body>\n</html>\n")


def manifest_key(view: RunView) -> str:
    """The key column `emlc clean --clean` expects: `path` for image folders, `id` for other sources."""
    return "path" if view.source.get("kind", "imagefolder") == "imagefolder" else "id"


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


def _per_class(view: RunView) -> str:
    changed = view.summary.get("changed_per_class", {})
    rows = []
    for c in view.classes:
        noisy, moved = view.noisy_per_class.get(c, 0), int(changed.get(c, 0))
        rate = f"{moved / noisy:.1%}" if noisy else "n/a"
        rows.append(f'<tr data-class="{e(c)}"><th>{e(c)}</th><td>{noisy:,}</td><td>{moved:,}</td><td>{rate}</td></tr>')
    return ('<table class="per-class"><caption>Estimated noise per class (by given label)</caption>'
            "<thead><tr><th>class</th><th>noisy</th><th>changed</th><th>est. noise</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _epochs(summary: dict[str, Any]) -> str:
    epochs = summary.get("epochs") or []
    if not epochs:
        return ""
    rows = "".join(
        f"<tr><td>{ep.get('epoch', 0) + 1}</td><td>{e(ep.get('phase', ''))}</td>"
        f"<td>{ep.get('student_holdout_acc', 0):.3f}</td><td>{ep.get('teacher_holdout_acc', 0):.3f}</td>"
        f"<td>{ep.get('seconds', 0):.1f}</td><td>{'best' if ep.get('best') else ''}</td></tr>"
        for ep in epochs)
    return ("<details><summary>Training timeline</summary><table class=\"epochs\"><thead><tr><th>epoch</th><th>phase</th>"
            "<th>student holdout</th><th>teacher holdout</th><th>seconds</th><th></th></tr></thead>"
            f"<tbody>{rows}</tbody></table></details>")


def _recipe(view: RunView) -> str:
    if not view.recipe_text:
        return ""
    return f"<details><summary>Recipe (recipe.yaml)</summary><pre>{e(view.recipe_text)}</pre></details>"


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
    data = view.source.get("root") if view.source.get("kind", "imagefolder") == "imagefolder" else None
    command = f"emlc clean {data or 'DATA'} --clean clean.csv --clean decisions.csv --out {view.run}-next"
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
            f'<p class="muted hint">Next round: <code id="next-command">{e(command)}</code></p></section>')


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
            f"(<code>{manifest_key(view)},label</code>; paths are relative to the data folder). Pass it to "
            "<code>emlc clean</code> with another <code>--clean</code> to start the next round with a larger verified set. Decisions are kept in this browser "
            f"until you clear them.</p><p>Report of {view.totals['rows']:,} rows; "
            f"at most {view.top:,} images per section.</p></footer>")


CSS = """
:root{--ink:#1d2330;--muted:#667085;--line:#d9dde5;--bg:#f6f7f9;--card:#fff;--given:#b42318;--fixed:#067647;--accent:#2e5aac}
*{box-sizing:border-box}
body{margin:0;padding:0 24px 48px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
h1{font-size:22px;margin:20px 0 2px}h2{font-size:17px;margin:28px 0 4px}
.muted{color:var(--muted)}.notice{background:#fff6e5;border:1px solid #f5c16c;padding:6px 10px;border-radius:6px}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;margin:10px 0}
.stat{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 10px}
.stat dt{color:var(--muted);font-size:12px}.stat dd{margin:0;font-size:17px;font-weight:600}
.columns{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
table{border-collapse:collapse;background:var(--card)}th,td{border:1px solid var(--line);padding:4px 10px;text-align:right}
th{font-weight:600;text-align:left}caption{text-align:left;font-weight:600;padding:4px 0}
details{margin:6px 0}pre{background:var(--card);border:1px solid var(--line);padding:8px;max-height:320px;overflow:auto}
.scroll{overflow:auto;max-width:100%}.heatmap td{min-width:56px;text-align:center;font-variant-numeric:tabular-nums}
.heatmap td.off[data-count]:not([data-count="0"]){cursor:pointer}.heatmap td.off:hover{outline:2px solid var(--accent)}
#toolbar{position:sticky;top:0;z-index:5;background:var(--bg);border-bottom:1px solid var(--line);padding:10px 0;margin-top:24px;
display:flex;flex-wrap:wrap;gap:10px 24px;align-items:center}
#toolbar .hint{flex-basis:100%;margin:0;font-size:12px}
.filters,.decisions{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
select,button{font:inherit;padding:3px 6px;border:1px solid var(--line);border-radius:6px;background:#fff}
button{cursor:pointer}button.primary{background:var(--accent);color:#fff;border-color:var(--accent)}button:disabled{opacity:.45;cursor:default}
#decision-count{font-weight:600}
.pager{display:flex;gap:10px;align-items:center;margin:8px 0}.pager .count{color:var(--muted)}
.badge{background:var(--line);border-radius:10px;padding:0 8px;font-size:13px;font-weight:500}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
.card{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px;display:flex;flex-direction:column;gap:6px}
.card.decided{border-color:var(--fixed);box-shadow:0 0 0 1px var(--fixed) inset}
.card[hidden]{display:none}
.thumb{width:112px;height:112px;object-fit:contain;align-self:center;image-rendering:pixelated;background:#eee;border-radius:4px}
.card p{margin:0}.meta{display:flex;gap:6px;justify-content:space-between;align-items:baseline}
.path{font:12px ui-monospace,Menlo,monospace;color:var(--muted);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.labels{font-weight:600}.given{color:var(--given);text-decoration:line-through}.corrected{color:var(--fixed)}.kept{color:var(--ink)}
.conf{font-weight:600;color:var(--ink);font-variant-numeric:tabular-nums}
.reason{font-size:12px;color:#7a5b00}
.decision{border:0;padding:0;margin:0;font-size:12.5px;display:flex;flex-direction:column;gap:2px}
.decision legend{font-size:11px;color:var(--muted);padding:0}.decision select{font-size:12px;padding:1px 3px}
.undo{align-self:flex-start;font-size:11px;padding:0 6px}
footer{margin-top:32px;border-top:1px solid var(--line);padding-top:8px}
"""

JS = r"""
(function () {
  "use strict";
  var PAGE = parseInt(document.querySelector('meta[name="emlc-page-size"]').content, 10) || 48;
  var KEY = "emlc-review:" + document.querySelector('meta[name="emlc-run"]').content;
  var COLUMN = document.querySelector('meta[name="emlc-manifest-key"]').content || "path";
  var state = {"class": "", given: "", corrected: "", status: "", sort: "listed"};
  var decisions = {};
  var byPath = {};
  var galleries = Array.prototype.slice.call(document.querySelectorAll(".gallery"));
  galleries.forEach(function (g) {
    g.cards = Array.prototype.slice.call(g.querySelectorAll(".card"));
    g.page = 0;
    g.cards.forEach(function (c) { (byPath[c.dataset.path] = byPath[c.dataset.path] || []).push(c); });
  });
  function has(path) { return Object.prototype.hasOwnProperty.call(decisions, path); }
  function load() {
    try { decisions = JSON.parse(window.localStorage.getItem(KEY) || "{}") || {}; } catch (err) { decisions = {}; }
    Object.keys(decisions).forEach(function (p) { if (!byPath[p]) { delete decisions[p]; } });
  }
  function save() { try { window.localStorage.setItem(KEY, JSON.stringify(decisions)); } catch (err) { /* private mode */ } }
  function matches(card) {
    var d = card.dataset;
    if (state["class"] && d.given !== state["class"] && d.corrected !== state["class"]) { return false; }
    if (state.given && d.given !== state.given) { return false; }
    if (state.corrected && d.corrected !== state.corrected) { return false; }
    if (state.status === "decided" && !has(d.path)) { return false; }
    if (state.status === "undecided" && has(d.path)) { return false; }
    return true;
  }
  function ordered(cards) {
    var out = cards.slice(), sign = state.sort === "asc" ? 1 : -1;
    out.sort(function (a, b) {
      if (state.sort !== "listed") {
        var diff = sign * (parseFloat(a.dataset.confidence) - parseFloat(b.dataset.confidence));
        if (diff) { return diff; }
      }
      return a.dataset.order - b.dataset.order;
    });
    return out;
  }
  function render() {
    galleries.forEach(function (g) {
      var cards = ordered(g.cards), shown = cards.filter(matches);
      var pages = Math.max(1, Math.ceil(shown.length / PAGE));
      if (g.page >= pages) { g.page = pages - 1; }
      var visible = new Set(shown.slice(g.page * PAGE, (g.page + 1) * PAGE));
      var box = g.querySelector(".cards");
      cards.forEach(function (c) { c.hidden = !visible.has(c); box.appendChild(c); });
      g.querySelectorAll(".pager").forEach(function (nav) {
        nav.querySelector(".page").textContent = "page " + (g.page + 1) + " of " + pages;
        nav.querySelector(".count").textContent = shown.length + " of " + cards.length + " shown images match";
        nav.querySelector(".prev").disabled = g.page === 0;
        nav.querySelector(".next").disabled = g.page >= pages - 1;
        nav.hidden = cards.length === 0;
      });
      var empty = g.querySelector(".empty");
      empty.hidden = shown.length > 0;
      empty.textContent = cards.length ? "No image here matches the filters." : "None in this run.";
    });
  }
  function paint(card) {
    var path = card.dataset.path, label = has(path) ? decisions[path] : null, fixed = false;
    card.querySelectorAll('input[type="radio"]').forEach(function (r) {
      if (r.dataset.choice !== "other") { r.checked = label !== null && r.value === label; fixed = fixed || r.checked; }
    });
    var other = card.querySelector('input[data-choice="other"]'), select = card.querySelector(".other-label");
    if (label !== null && !fixed) { other.checked = true; select.value = label; }
    else if (label !== null || !other.checked) { other.checked = false; select.value = ""; }
    card.classList.toggle("decided", label !== null);
    card.querySelector(".undo").hidden = label === null;
  }
  function count() {
    var n = Object.keys(decisions).length;
    document.getElementById("decision-count").textContent = n + (n === 1 ? " decision" : " decisions");
    document.getElementById("download").disabled = n === 0;
  }
  function decide(path, label) {
    if (label) { decisions[path] = label; } else { delete decisions[path]; }
    save();
    (byPath[path] || []).forEach(paint);
    count();
    if (state.status) { render(); }
  }
  function field(s) { return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
  function csv() {
    var lines = [COLUMN + ",label"];
    Object.keys(decisions).sort().forEach(function (p) { lines.push(field(p) + "," + field(decisions[p])); });
    return lines.join("\n") + "\n";
  }
  function download() {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([csv()], {type: "text/csv;charset=utf-8"}));
    a.download = "decisions.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 2000);
  }
  function setFilter(name, value) {
    state[name] = value;
    var el = document.querySelector('[data-filter="' + name + '"]');
    if (el) { el.value = value; }
  }
  function refilter() { galleries.forEach(function (g) { g.page = 0; }); render(); }
  document.addEventListener("change", function (ev) {
    var t = ev.target, card = t.closest ? t.closest(".card") : null;
    if (t.dataset && t.dataset.filter) { state[t.dataset.filter] = t.value; refilter(); return; }
    if (!card) { return; }
    var path = card.dataset.path;
    if (t.classList.contains("other-label")) {
      card.querySelector('input[data-choice="other"]').checked = !!t.value;
      decide(path, t.value);
    } else if (t.type === "radio" && t.dataset.choice === "other") {
      var chosen = card.querySelector(".other-label").value;
      decide(path, chosen);
      if (!chosen) { card.querySelector(".other-label").focus(); }
    } else if (t.type === "radio") {
      decide(path, t.value);
    }
  });
  document.addEventListener("click", function (ev) {
    var t = ev.target, g = t.closest ? t.closest(".gallery") : null;
    if (t.classList.contains("undo")) {
      var card = t.closest(".card");
      card.querySelector('input[data-choice="other"]').checked = false;
      decide(card.dataset.path, "");
    } else if (g && (t.classList.contains("prev") || t.classList.contains("next"))) {
      g.page += t.classList.contains("next") ? 1 : -1;
      render();
      g.scrollIntoView({block: "start"});
    } else if (t.classList.contains("cell") && t.classList.contains("off")) {
      setFilter("class", ""); setFilter("given", t.dataset.given); setFilter("corrected", t.dataset.corrected);
      refilter();
      document.getElementById("changed").scrollIntoView({block: "start"});
    } else if (t.id === "download") {
      download();
    } else if (t.id === "clear-decisions") {
      if (Object.keys(decisions).length && window.confirm("Forget every decision made in this report?")) {
        decisions = {}; save();
        document.querySelectorAll('.card input[data-choice="other"]').forEach(function (r) { r.checked = false; });
        Object.keys(byPath).forEach(function (p) { byPath[p].forEach(paint); });
        count(); render();
      }
    } else if (t.id === "reset-filters") {
      ["class", "given", "corrected", "status"].forEach(function (k) { setFilter(k, ""); });
      setFilter("sort", "listed");
      refilter();
    }
  });
  load();
  Object.keys(byPath).forEach(function (p) { byPath[p].forEach(paint); });
  count();
  render();
  window.emlcReview = {decisions: function () { return JSON.parse(JSON.stringify(decisions)); }, csv: csv, render: render};
})();
"""
