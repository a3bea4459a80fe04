// The live page: applies each change from the server-sent stream to its row, and words it in the "Latest changes"
// list the way the server words the rows it rendered (the word tables come from the table's data-words).
// A file, not an inline script, so the page's CSP can forbid inline scripts.
(function () {
  "use strict";
  var FIELDS = ["username", "email", "first_name", "last_name", "groups", "status"];
  var SHOWN_CHANGES = 8;
  var table = document.getElementById("users");
  var body = table.querySelector("tbody");
  var words = JSON.parse(table.dataset.words);
  var insertNew = table.dataset.insertNew === "1";
  var state = document.getElementById("stream-state");
  var stateWords = document.getElementById("stream-words");
  var lastChange = document.getElementById("last-change");
  var changesList = document.getElementById("changes");
  var rows = new Map();
  body.querySelectorAll("tr[data-asgardeo-id]").forEach(function (tr) { rows.set(tr.dataset.asgardeoId, tr); });

  function show(value) {
    if (value === null || value === undefined) { return ""; }
    return Array.isArray(value) ? value.join(", ") : String(value);
  }

  function shown(value) {
    var text = show(value);
    return text === "" ? "(empty)" : text;
  }

  function describe(change) {
    var parts = [];
    var changes = change.changes || {};
    Object.keys(changes).forEach(function (name) {
      var pair = changes[name];
      var label = words.fields[name] || name;
      if (Array.isArray(pair) && pair.length === 2) {
        parts.push(change.action === "created" ? label + " " + shown(pair[1]) : label + " " + shown(pair[0]) + " → " + shown(pair[1]));
      } else {
        parts.push(label + " " + shown(pair));
      }
    });
    var head = words.actions[change.action] || change.action;
    return parts.length ? head + ": " + parts.join("; ") : head;
  }

  function source(change) {
    var text = words.sources[change.source] || change.source || "";
    if (change.actor && ["admin", "cli", "guard_review"].indexOf(change.source) >= 0) { text += " by " + change.actor; }
    return text;
  }

  function who(change, tr) {
    var email = change.changes && Array.isArray(change.changes.email) ? change.changes.email[1] : null;
    var cell = tr ? tr.querySelector('td[data-field="email"]') : null;
    return email || (cell && cell.textContent) || change.asgardeo_id;
  }

  function rowFor(asgardeoId) {
    var tr = rows.get(asgardeoId);
    if (tr || !insertNew) { return tr || null; }
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

  function record(change, tr) {
    var item = document.createElement("li");
    item.dataset.changeId = String(change.id);
    var time = document.createElement("time");
    var now = new Date();
    time.textContent = now.toISOString().slice(0, 19).replace("T", " ") + " UTC";
    var person = document.createElement("strong");
    person.textContent = who(change, tr);
    var from = document.createElement("span");
    from.className = "muted";
    from.textContent = source(change);
    item.append(time, " · ", person, " " + describe(change) + " · ", from);
    changesList.insertBefore(item, changesList.firstChild);
    while (changesList.children.length > SHOWN_CHANGES) { changesList.removeChild(changesList.lastChild); }
    var empty = document.getElementById("no-changes");
    if (empty) { empty.remove(); }
    lastChange.textContent = time.textContent;
    lastChange.dataset.changeId = String(change.id);
  }

  function apply(change) {
    if (!change || !change.asgardeo_id) { return; }
    var tr = rowFor(change.asgardeo_id);
    if (tr) {
      var changes = change.changes || {};
      Object.keys(changes).forEach(function (name) {
        var cell = tr.querySelector('td[data-field="' + name + '"]');
        var pair = changes[name];
        if (!cell || !Array.isArray(pair) || pair.length !== 2) { return; }
        var link = cell.querySelector("a");
        (link || cell).textContent = show(pair[1]);
      });
      tr.dataset.action = change.action;
    }
    record(change, tr);
  }

  function setState(name, text) {
    state.textContent = name;
    state.dataset.state = name;
    stateWords.textContent = text;
  }

  var stream = new EventSource(table.dataset.streamUrl);
  stream.onopen = function () { setState("live", "Live: changes appear here as they are applied."); };
  stream.onerror = function () { setState("reconnecting", "Connection lost; reconnecting (no change will be missed)."); };
  stream.onmessage = function (event) {
    try { apply(JSON.parse(event.data)); } catch (err) { console.error("bad live message", err); }
  };
})();
