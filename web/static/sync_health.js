// The sync-health page's replay buttons. Loaded as a file, not inline, so the page's CSP can forbid inline scripts;
// the CSRF token comes from the layout's <meta name="csrf-token">, as web/csrf.py requires for cookie requests.
(function () {
  "use strict";
  var result = document.getElementById("replay-result");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  function replay(url, row) {
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRF-Token": csrf}
    })
      .then(function (response) { return response.json().then(function (body) { return [response.status, body]; }); })
      .then(function (answer) {
        if (answer[0] >= 400) { result.textContent = "Replay refused: " + answer[1].detail; return; }
        result.textContent = "Replay queued.";
        if (row) { row.remove(); }
      })
      .catch(function () { result.textContent = "Replay failed: the server did not answer."; });
  }
  document.querySelectorAll("button.replay").forEach(function (button) {
    button.addEventListener("click", function () {
      replay("/admin/events/" + button.dataset.eventId + "/replay", button.closest("tr"));
    });
  });
  var all = document.getElementById("replay-all");
  if (all) { all.addEventListener("click", function () { replay("/admin/events/replay-failed", null); }); }
}());
