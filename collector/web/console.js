// The Deskpulse web console's own script (collector/src/web/). Loaded as a
// file: the Content-Security-Policy allows no inline script. It does three
// small things the server cannot: sends the session's CSRF token with htmx
// requests, shows times in the viewer's time zone (the UTC time stays in
// the title), and counts down to SLA due times.
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

  function refresh(root) {
    localTimes(root);
    countdowns();
  }

  document.addEventListener("DOMContentLoaded", function () {
    refresh(document);
    window.setInterval(countdowns, 15000);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    refresh(event.target);
  });
})();
