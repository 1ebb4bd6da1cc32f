// Labelforce: the lease countdown, "more time" without a reload, and keyboard shortcuts on the task page.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');

  // --- lease countdown and heartbeat ---------------------------------------------------------------
  var lease = document.querySelector("[data-lease]");
  if (lease) {
    var shown = lease.querySelector("[data-countdown]");
    var expires = Date.now() + 1000 * Number(lease.dataset.secondsLeft || 0);
    var canExtend = lease.dataset.canExtend === "true";
    var active = false;
    var pending = false;
    ["keydown", "pointerdown", "input"].forEach(function (name) {
      document.addEventListener(name, function () { active = true; }, { passive: true });
    });
    var format = function (seconds) {
      var m = Math.floor(seconds / 60), s = seconds % 60;
      if (m >= 60) { return Math.floor(m / 60) + " h " + (m % 60) + " min"; }
      return m + ":" + (s < 10 ? "0" : "") + s;
    };
    var heartbeat = function () {
      if (pending || !canExtend) { return Promise.resolve(); }
      pending = true;
      return fetch(lease.dataset.heartbeatUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRFToken": csrf ? csrf.content : "" }
      }).then(function (response) {
        if (!response.ok) { throw new Error("heartbeat " + response.status); }
        return response.json();
      }).then(function (body) {
        expires = Date.now() + 1000 * body.seconds_left;
        canExtend = body.can_extend;
        active = false;
      }).catch(function () { /* the countdown shows the truth; the server refuses a late submit */ })
        .finally(function () { pending = false; });
    };
    var tick = function () {
      var left = Math.max(0, Math.round((expires - Date.now()) / 1000));
      shown.textContent = left > 0 ? format(left) : "ended";
      lease.classList.toggle("ending", left > 0 && left <= 60);
      lease.classList.toggle("ended", left === 0);
      if (left === 0) {
        document.querySelectorAll("[data-submit]").forEach(function (b) { b.disabled = true; });
        return;
      }
      // Someone still working gets more time before the lease runs out, without asking.
      if (left <= 90 && active) { heartbeat(); }
      window.setTimeout(tick, 1000);
    };
    tick();
    var hbForm = document.querySelector("[data-heartbeat-form]");
    if (hbForm) {
      hbForm.addEventListener("submit", function (event) {
        event.preventDefault();
        active = true;
        heartbeat();
      });
    }
  }

  // --- keyboard: 1–9 pick a choice, Enter submits and opens the next item (Ctrl+Enter in a text answer) ---
  var form = document.querySelector("form[data-label-form]");
  if (form) {
    var submitNext = function () { form.requestSubmit(form.querySelector("[data-submit-next]")); };
    var choices = form.querySelectorAll('input[name="choice"]');
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.metaKey || event.isComposing) { return; }
      var typing = event.target.closest && event.target.closest("textarea, input[type=text], select");
      if (typing) {
        if (event.key === "Enter" && event.ctrlKey && event.target.form === form) {
          event.preventDefault();
          submitNext();
        }
        return;
      }
      if (event.ctrlKey) { return; }
      if (/^[1-9]$/.test(event.key) && choices.length) {
        var input = choices[Number(event.key) - 1];
        if (input) {
          event.preventDefault();
          if (input.type === "radio") { input.checked = true; } else { input.checked = !input.checked; }
          input.focus();
        }
      } else if (event.key === "Enter" && choices.length && !(event.target.closest && event.target.closest("button, a"))) {
        event.preventDefault();
        submitNext();
      }
    });
  }
})();
