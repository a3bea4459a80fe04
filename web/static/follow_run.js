// Follows work in progress without a reload: polls its JSON (a run's is the same address as its page) once a second,
// moves the counters and the estimate, and reloads the page once the work has ended so the server shows the result.
// An element with data-follow-run="<json url>" is followed while the JSON's status is data-working ("running").
(function () {
  "use strict";
  var POLL_MS = 1000;
  var RETRY_MS = 3000;

  function text(value) {
    return value === null || value === undefined ? "—" : String(value);
  }

  function minutesLeft(run) {
    if (!run.total_results || !run.seen || !run.heartbeat_at || run.seen >= run.total_results) { return ""; }
    var elapsed = (Date.parse(run.heartbeat_at) - Date.parse(run.started_at)) / 1000;
    if (!(elapsed > 0)) { return ""; }
    var seconds = Math.round((run.total_results - run.seen) * elapsed / run.seen);
    if (seconds < 60) { return "about " + seconds + " s left"; }
    return "about " + Math.round(seconds / 60) + " min left";
  }

  function pick(value, path) {
    return path.split(".").reduce(function (found, key) { return found === null || found === undefined ? found : found[key]; }, value);
  }

  function update(box, run) {
    box.querySelectorAll("[data-counter]").forEach(function (cell) {
      var value = pick(run, cell.dataset.counter);
      if (cell.dataset.scale && typeof value === "number") { value = (value * Number(cell.dataset.scale)).toFixed(1); }
      cell.textContent = text(value);
    });
    var estimate = box.querySelector("[data-estimate]");
    if (estimate) { estimate.textContent = minutesLeft(run) || "—"; }
    var state = box.querySelector("[data-run-state]");
    if (state) { state.textContent = run.status; }
    box.dataset.runStatus = run.status;
  }

  function follow(box) {
    var note = box.querySelector("[data-poll-note]");
    fetch(box.dataset.followRun, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          if (note) { note.textContent = "Your session has ended: reload the page to sign in again."; }
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (run) {
        if (run === null) { return; }
        update(box, run);
        if (note) { note.textContent = ""; }
        if (run.status !== (box.dataset.working || "running")) { window.location.reload(); return; }
        window.setTimeout(function () { follow(box); }, POLL_MS);
      })
      .catch(function () {
        if (note) { note.textContent = "Lost contact with the server; trying again."; }
        window.setTimeout(function () { follow(box); }, RETRY_MS);
      });
  }

  document.querySelectorAll("[data-follow-run]").forEach(follow);
}());
