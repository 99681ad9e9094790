"""The review report's stylesheet and script, inlined into every report (nothing is fetched)."""

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
    // picked=1: emlc chose these images; they train the teacher but are no random sample of the noise
    var lines = [COLUMN + ",label,picked"];
    Object.keys(decisions).sort().forEach(function (p) { lines.push(field(p) + "," + field(decisions[p]) + ",1"); });
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
