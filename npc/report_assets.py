"""The noise report page's style sheet and script, inlined into index.html (no file of its own, nothing fetched)."""

PAGE_CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{font-family:sans-serif;margin:0 auto;padding:12px 18px;color:#222;max-width:1250px}
.warn{background:#fde8e4;border:1px solid #d95f0e;padding:8px 12px;border-radius:4px}
h1{font-size:21px} h2{font-size:17px;margin-top:26px}
p{overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px} td,th{border-bottom:1px solid #ddd;padding:4px 7px;vertical-align:top;
text-align:left} th{background:#f2f2f2}
.num{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr));gap:8px;max-width:1320px}
.hist{display:block;width:100%;height:auto;border:1px solid #eee} .t{font-size:13px;font-weight:bold} .s{font-size:10px}
.noisy{background:#fff1e6} .badge{font-size:11px;padding:1px 5px;border-radius:3px;color:#fff;margin-left:4px;
white-space:nowrap} .bn{background:#d95f0e} .bc{background:#2c7fb8} .bf{background:#777}
.cap,.cands li{overflow-wrap:break-word} .where{overflow-wrap:anywhere}
ol.cand{margin:0;padding-left:18px;font-size:12px} .own{font-weight:bold} .true{color:#1b5e20;font-weight:bold}
.muted{color:#777;font-size:12px} img.th{width:96px;height:auto;image-rendering:auto;display:block}
td.sc{white-space:nowrap} td.cands{min-width:260px} .cl{display:none}
button{font:inherit;font-size:13px;cursor:pointer;border:1px solid #999;border-radius:4px;background:#f7f7f7;color:#222}
button.d{display:block;width:84px;margin:0 0 4px;padding:4px 6px}
button.d[aria-pressed="true"]{color:#fff;font-weight:bold} button.wrong[aria-pressed="true"]{background:#c0392b;
border-color:#c0392b} button.right[aria-pressed="true"]{background:#2e7d32;border-color:#2e7d32}
button.unsure[aria-pressed="true"]{background:#8a6d00;border-color:#8a6d00}
tr.pr[data-decision="wrong"]{background:#fbe4e1} tr.pr[data-decision="right"]{background:#e6f3e6}
tr.pr[data-decision="unsure"]{background:#fbf4dc}
tr.pr.cur{outline:3px solid #1f6feb;outline-offset:-3px}
table.pairs tr.off{display:none !important}
.bar{position:sticky;top:0;z-index:2;background:#fff;border:1px solid #ccc;border-radius:4px;padding:6px 8px;
margin:8px 0;display:flex;flex-wrap:wrap;gap:6px 12px;align-items:center;font-size:13px}
.bar #dec-count{font-weight:bold} .filt button{margin-right:3px;padding:3px 7px}
.filt button[aria-pressed="true"]{background:#333;color:#fff;border-color:#333}
kbd{font-family:monospace;border:1px solid #bbb;border-radius:3px;padding:0 3px;background:#fafafa}
@media (max-width:760px){
 body{padding:8px 10px}
 table.pairs,table.pairs tbody{display:block}
 table.pairs tr{display:flex;flex-wrap:wrap;align-items:flex-start;border-bottom:2px solid #ccc;padding:4px 0}
 table.pairs tr.head{display:none}
 table.pairs td{border:0;padding:3px 5px}
 table.pairs td.cap{flex:1 1 150px;min-width:0}
 table.pairs td.cands{flex:1 1 100%;min-width:0;padding-left:12px}
 .cl{display:block;font-size:12px;color:#555;margin-bottom:2px}
 table.pairs td.dec{flex:1 1 100%;display:flex;flex-wrap:wrap;align-items:center;gap:6px;padding-left:12px}
 table.pairs td.dec .cl{display:inline;margin:0}
 button.d{display:inline-block;width:auto;min-width:72px;margin:0;padding:7px 10px}
 .bar .keys{display:none}
 table.det{font-size:12px} table.det td,table.det th{padding:3px 4px}
}
"""


#: The decision mode (index.html's only script; no ``//`` in it, so nothing in the page reads as a URL): a choice
#: per pair row (wrong / right / not sure) by click or key (j/k move, w/r/u decide and move on, x undoes), kept in
#: the browser's local storage under the report's identity and restored when the page is opened again, a counter,
#: a filter, and ``decisions.csv`` (a ``#`` line naming the report's data fingerprint, then
#: ``key,decision,caption`` rows, RFC 4180 quoting) downloaded from the page itself: no server.
PAGE_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("npc-report").textContent);
  var id = data.identity;
  var storeKey = "npc-decisions:" + id.data_fingerprint + ":" + id.run;
  var LABELS = {wrong: "wrong", right: "right", unsure: "not sure"};
  var KEYS = {w: "wrong", r: "right", u: "unsure"};
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.pr"));
  var decisions = {}, filter = "all", current = -1, kept = true;
  try {
    var saved = JSON.parse(window.localStorage.getItem(storeKey) || "{}");
    Object.keys(saved || {}).forEach(function (p) { if (LABELS[saved[p]] && data.pairs[p]) decisions[p] = saved[p]; });
  } catch (e) { kept = false; }
  function save() {
    try { window.localStorage.setItem(storeKey, JSON.stringify(decisions)); kept = true; } catch (e) { kept = false; }
  }
  function shown(tr) {
    var d = decisions[tr.dataset.pair];
    return filter === "all" || (filter === "undecided" ? !d : d === filter);
  }
  function paint() {
    rows.forEach(function (tr) {
      var d = decisions[tr.dataset.pair] || "";
      if (d) tr.dataset.decision = d; else delete tr.dataset.decision;
      tr.querySelectorAll("button.d").forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.d === d)); });
      tr.classList.toggle("off", !shown(tr));
      tr.classList.toggle("cur", rows[current] === tr);
    });
    var n = {wrong: 0, right: 0, unsure: 0}, total = Object.keys(data.pairs).length;
    Object.keys(decisions).forEach(function (p) { n[decisions[p]] += 1; });
    var done = n.wrong + n.right + n.unsure;
    document.getElementById("dec-count").textContent = done + " of " + total + " pairs decided: " + n.wrong +
      " wrong, " + n.right + " right, " + n.unsure + " not sure";
    document.querySelectorAll(".filt button").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.f === filter));
    });
    document.getElementById("dec-store").textContent = kept ? "" :
      "(this browser keeps nothing for this page: download your decisions before closing it)";
  }
  function move(step) {
    for (var k = current + step; k >= 0 && k < rows.length; k += step) {
      if (shown(rows[k])) { current = k; break; }
    }
    paint();
    if (rows[current]) rows[current].scrollIntoView({block: "nearest"});
  }
  function decide(k, d) {
    var p = rows[k].dataset.pair;
    if (d) decisions[p] = d; else delete decisions[p];
    save();
  }
  rows.forEach(function (tr, k) {
    tr.querySelectorAll("button.d").forEach(function (b) {
      b.addEventListener("click", function () {
        current = k;
        decide(k, decisions[tr.dataset.pair] === b.dataset.d ? "" : b.dataset.d);
        paint();
      });
    });
  });
  document.querySelectorAll(".filt button").forEach(function (b) {
    b.addEventListener("click", function () { filter = b.dataset.f; paint(); });
  });
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || (t && (t.isContentEditable ||
        /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)))) return;
    var key = e.key.toLowerCase();
    if (key === "j" || key === "k") { move(key === "j" ? 1 : -1); e.preventDefault(); return; }
    if (!KEYS[key] && key !== "x") return;
    if (current < 0 || !shown(rows[current])) move(1);
    if (current < 0) return;
    decide(current, KEYS[key] || "");
    e.preventDefault();
    if (KEYS[key]) move(1); else paint();
  });
  function field(s) {
    s = String(s);
    return /[",\\r\\n]/.test(s) || s.trim() !== s ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function csv() {
    var out = ["# npc pair decisions: data_fingerprint " + id.data_fingerprint + ", run " + id.run + ", dataset " +
               data.dataset, "key,decision,caption"], seen = {};
    data.order.forEach(function (j) {
      var p = String(j), d = decisions[p];
      if (d && !seen[p]) { seen[p] = true; out.push([data.pairs[p].key, d, data.pairs[p].caption].map(field).join(",")); }
    });
    return out.join("\\r\\n") + "\\r\\n";
  }
  document.getElementById("dec-download").addEventListener("click", function () {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([csv()], {type: "text/csv;charset=utf-8"}));
    a.download = "decisions.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 2000);
  });
  window.npcDecisionsCsv = csv;
  paint();
})();
"""
