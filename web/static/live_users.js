// The live user table: applies each change from the server-sent stream to its row. A file, not an inline
// script, so the page's CSP can forbid inline scripts; the stream's URL comes from the table's data-stream-url.
(function () {
  "use strict";
  var FIELDS = ["username", "email", "first_name", "last_name", "groups", "status"];
  var body = document.querySelector("#users tbody");
  var state = document.getElementById("stream-state");
  var lastChange = document.getElementById("last-change");
  var rows = new Map();
  body.querySelectorAll("tr[data-asgardeo-id]").forEach(function (tr) { rows.set(tr.dataset.asgardeoId, tr); });

  function show(value) {
    if (value === null || value === undefined) { return ""; }
    return Array.isArray(value) ? value.join(", ") : String(value);
  }

  function rowFor(asgardeoId) {
    var tr = rows.get(asgardeoId);
    if (tr) { return tr; }
    tr = document.createElement("tr");
    tr.dataset.asgardeoId = asgardeoId;
    FIELDS.forEach(function (name) {
      var td = document.createElement("td");
      td.dataset.field = name;
      td.textContent = name === "status" ? "active" : "";
      tr.appendChild(td);
    });
    body.insertBefore(tr, body.firstChild);
    rows.set(asgardeoId, tr);
    return tr;
  }

  function apply(change) {
    if (!change || !change.asgardeo_id) { return; }
    var tr = rowFor(change.asgardeo_id);
    var changes = change.changes || {};
    Object.keys(changes).forEach(function (name) {
      var cell = tr.querySelector('td[data-field="' + name + '"]');
      var pair = changes[name];
      if (cell && Array.isArray(pair) && pair.length === 2) { cell.textContent = show(pair[1]); }
    });
    tr.dataset.action = change.action;
    lastChange.textContent = String(change.id);
  }

  var source = new EventSource(document.getElementById("users").dataset.streamUrl);
  source.onopen = function () { state.textContent = "live"; state.dataset.state = "live"; };
  source.onerror = function () { state.textContent = "reconnecting"; state.dataset.state = "reconnecting"; };
  source.onmessage = function (event) {
    try { apply(JSON.parse(event.data)); } catch (err) { console.error("bad live message", err); }
  };
})();
