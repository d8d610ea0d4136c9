// The Deskpulse web console's own script (collector/src/web/). Loaded as a
// file: the Content-Security-Policy allows no inline script. It does what
// the server cannot: sends the session's CSRF token with htmx requests,
// shows times in the viewer's time zone (the UTC time stays in the title),
// counts down to SLA due times, and on the host page draws the health
// charts (uPlot, from the JSON each chart's data-health names), swaps in
// the chosen diagnostic's parameter fields, and shows a run's output as it
// streams. Text from PCs is only ever set as text, never as markup.
"use strict";

(function () {
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every request htmx makes carries the token as a header; plain forms
  // carry it as a hidden field the server rendered.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  function localTimes(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var at = new Date(times[i].getAttribute("datetime"));
      if (!isNaN(at.getTime())) {
        times[i].textContent = at.toLocaleString(undefined, {
          year: "numeric", month: "short", day: "numeric",
          hour: "2-digit", minute: "2-digit"
        });
      }
    }
  }

  function span(ms) {
    var minutes = Math.floor(Math.abs(ms) / 60000);
    var days = Math.floor(minutes / 1440);
    var hours = Math.floor((minutes % 1440) / 60);
    var rest = minutes % 60;
    if (days > 0) { return days + "d " + hours + "h"; }
    if (hours > 0) { return hours + "h " + rest + "m"; }
    return rest + "m";
  }

  function countdowns() {
    var now = Date.now();
    var due = document.querySelectorAll("[data-due-ms]");
    for (var i = 0; i < due.length; i++) {
      var left = Number(due[i].getAttribute("data-due-ms")) - now;
      if (isNaN(left)) { continue; }
      due[i].textContent = left >= 0 ? "in " + span(left) : "overdue " + span(left);
      due[i].classList.toggle("overdue", left < 0);
      due[i].classList.toggle("soon", left >= 0 && left < 3600000);
    }
  }

  // ---- The host page (collector/src/web/host.rs) ----

  var SERIES = [
    { key: "cpu_percent", label: "CPU %", stroke: "#1f5fbf" },
    { key: "cpu_max_percent", label: "CPU peak %", stroke: "#8fb3ea", dash: [4, 4] },
    { key: "memory_used_percent", label: "Memory %", stroke: "#1a7f37" },
    { key: "disk_used_max_percent", label: "Fullest disk %", stroke: "#a15c00" },
    { key: "temperature_max_celsius", label: "Hottest sensor \u00b0C", stroke: "#b42318", scale: "celsius" }
  ];

  function note(element, text) {
    var p = document.createElement("p");
    p.className = "muted";
    p.textContent = text;
    element.replaceChildren(p);
  }

  function drawChart(element, data) {
    if (typeof window.uPlot !== "function") {
      note(element, "The chart library did not load.");
      return;
    }
    var points = Array.isArray(data.points) ? data.points : [];
    if (points.length === 0) {
      note(element, "No health samples in this range.");
      return;
    }
    var columns = [points.map(function (p) { return p.at_ms / 1000; })];
    var series = [{}];
    SERIES.forEach(function (s) {
      columns.push(points.map(function (p) { return typeof p[s.key] === "number" ? p[s.key] : null; }));
      series.push({ label: s.label, stroke: s.stroke, width: 1.5, dash: s.dash, scale: s.scale || "percent" });
    });
    var from = data.from_ms / 1000;
    var to = data.to_ms / 1000;
    element.replaceChildren();
    new window.uPlot({
      width: Math.max(element.clientWidth, 320),
      height: 220,
      series: series,
      scales: {
        x: { time: true, range: function () { return [from, to]; } },
        percent: { range: function () { return [0, 100]; } },
        celsius: { range: function () { return [0, 110]; } }
      },
      axes: [
        {},
        { scale: "percent", values: function (u, ticks) { return ticks.map(function (v) { return v + "%"; }); } },
        { scale: "celsius", side: 1, grid: { show: false }, values: function (u, ticks) { return ticks.map(function (v) { return v + "\u00b0C"; }); } }
      ]
    }, columns, element);
  }

  function charts(root) {
    var found = root.querySelectorAll(".chart[data-health]");
    Array.prototype.forEach.call(found, function (element) {
      fetch(element.getAttribute("data-health"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("the health history answered " + response.status); }
          return response.json();
        })
        .then(function (data) { drawChart(element, data); })
        .catch(function (error) { note(element, "The chart could not be drawn: " + error.message); });
    });
  }

  // The fields of the chosen diagnostic, from its <template>: only its own
  // inputs are in the form, so only they are posted.
  function showFields(form) {
    var select = form.querySelector('select[name="diagnostic"]');
    var fields = form.querySelector("#diagnostic-fields");
    if (!select || !fields) { return; }
    var templates = form.querySelectorAll("template[data-diagnostic]");
    for (var i = 0; i < templates.length; i++) {
      if (templates[i].getAttribute("data-diagnostic") === select.value) {
        fields.replaceChildren(templates[i].content.cloneNode(true));
        return;
      }
    }
    fields.replaceChildren();
  }

  function runLine(state, line) {
    var message;
    try { message = JSON.parse(line); } catch (e) { return; }
    if (message.job) {
      state.status.textContent = "Job " + message.job.id + " for " + message.job.diagnostic +
        " (" + message.job.params + "): " + message.job.state + "…";
    } else if (typeof message.output === "string") {
      state.output.appendChild(document.createTextNode(message.output));
    } else if (message.finished) {
      var done = message.finished;
      // The stored result is whole: it replaces what arrived live.
      state.output.textContent = done.output || "";
      state.status.textContent = "Job " + done.id + ": " + done.state +
        (done.exit_code === null || done.exit_code === undefined ? "" : ", exit status " + done.exit_code) +
        (done.reason ? " (" + done.reason + ")" : "") +
        (done.truncated ? "; output cut at its cap" : "");
    } else if (typeof message.queued === "string") {
      state.status.textContent = message.queued;
    } else if (typeof message.error === "string") {
      state.error.textContent = message.error;
    }
  }

  function readRun(response, state) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var pending = "";
    function pump() {
      return reader.read().then(function (chunk) {
        pending += decoder.decode(chunk.value || new Uint8Array(0), { stream: !chunk.done });
        var lines = pending.split("\n");
        pending = lines.pop();
        lines.forEach(function (line) { if (line) { runLine(state, line); } });
        if (chunk.done) {
          if (pending) { runLine(state, pending); }
          return undefined;
        }
        return pump();
      });
    }
    return pump();
  }

  function runForms() {
    var form = document.getElementById("run-diagnostic");
    if (!form) { return; }
    var select = form.querySelector('select[name="diagnostic"]');
    if (select) { select.addEventListener("change", function () { showFields(form); }); }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var live = document.getElementById("live-output");
      var state = {
        output: live.querySelector("pre") || live,
        status: document.getElementById("run-status"),
        error: document.getElementById("run-error")
      };
      state.output.textContent = "";
      state.status.textContent = "Asking…";
      state.error.textContent = "";
      var button = form.querySelector('button[type="submit"]');
      if (button) { button.disabled = true; }
      fetch(form.getAttribute("action"), {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/x-ndjson", "X-CSRF-Token": csrfToken() },
        body: new URLSearchParams(new FormData(form))
      }).then(function (response) {
        if (response.ok && response.body) { return readRun(response, state); }
        return response.text().then(function (text) {
          var line = "The run was refused (" + response.status + ").";
          try { line = JSON.parse(text.split("\n")[0]).error || line; } catch (e) { /* not JSON */ }
          state.status.textContent = "";
          state.error.textContent = line;
        });
      }).catch(function (error) {
        state.error.textContent = "The run's answer was cut off: " + error.message;
      }).then(function () {
        if (button) { button.disabled = false; }
      });
    });
  }

  function refresh(root) {
    localTimes(root);
    countdowns();
  }

  document.addEventListener("DOMContentLoaded", function () {
    refresh(document);
    window.setInterval(countdowns, 15000);
    charts(document);
    runForms();
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    refresh(event.target);
  });
})();
