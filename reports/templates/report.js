(function () {
  "use strict";
  var doc = document, root = doc.documentElement;
  var generated = Date.parse(root.getAttribute("data-generated"));
  var age = Date.now() - generated;
  if (age > 2 * 3600 * 1000) {
    var note = doc.getElementById("freshness");
    note.textContent = "This report is " + Math.floor(age / 3600000) +
      " hours old: hive report has stopped updating it. What follows may be out of date.";
    note.hidden = false;
    doc.body.classList.add("stale-page");
  }
  var table = doc.querySelector("table.repos");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var sorters = {};
  heads.forEach(function (th, column) {
    if (!th.hasAttribute("data-type")) { return; }
    var button = doc.createElement("button");
    button.type = "button";
    while (th.firstChild) { button.appendChild(th.firstChild); }
    th.appendChild(button);
    function sort(ascending) {
      var numeric = th.getAttribute("data-type") === "number";
      heads.forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var keyed = rows.map(function (row) {
        var cell = row.cells[column];
        var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
        return [numeric ? (raw === "" ? -Infinity : parseFloat(raw)) : raw.toLowerCase(), row];
      });
      keyed.sort(function (a, b) {
        var order = a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
        return ascending ? order : -order;
      });
      var fragment = doc.createDocumentFragment();
      keyed.forEach(function (pair) { fragment.appendChild(pair[1]); });
      body.appendChild(fragment);
    }
    sorters[th.getAttribute("data-key")] = sort;
    button.addEventListener("click", function () {
      sort(th.getAttribute("aria-sort") !== "ascending");
    });
  });
  var form = doc.getElementById("filters");
  if (!form) { return; }
  var owner = form.elements.owner, group = form.elements.group, state = form.elements.state,
      text = form.elements.text, count = doc.getElementById("shown");
  function apply() {
    var shown = 0, needle = text.value.trim().toLowerCase();
    rows.forEach(function (row) {
      var ok = (!owner.value || row.getAttribute("data-owner") === owner.value) &&
        (!group.value || (" " + row.getAttribute("data-groups") + " ").indexOf(" " + group.value + " ") >= 0) &&
        (!state.value || row.getAttribute("data-state") === state.value) &&
        (!needle || row.cells[0].textContent.toLowerCase().indexOf(needle) >= 0);
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " shown";
  }
  form.addEventListener("input", apply);
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  form.hidden = false;
  // A link may carry a view: index.html#state=stale&owner=alice&sort=size&dir=desc
  var wanted = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
    var parts = pair.split("=");
    if (parts.length === 2) { wanted[parts[0]] = decodeURIComponent(parts[1]); }
  });
  [owner, group, state, text].forEach(function (field) {
    if (wanted[field.name] !== undefined) { field.value = wanted[field.name]; }
  });
  if (sorters[wanted.sort]) { sorters[wanted.sort](wanted.dir !== "desc"); }
  apply();
}());
