// LeadOps: small progressive enhancements. Pages work without it.
(function () {
  "use strict";
  function fmt(ms) {
    const late = ms < 0;
    let s = Math.floor(Math.abs(ms) / 1000);
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const txt = (h ? h + "h " : "") + String(m).padStart(h ? 2 : 1, "0") + "m " + String(s).padStart(2, "0") + "s";
    return late ? "overdue " + txt : txt;
  }
  // <span class="countdown" data-due="ISO">: ticks every second, turns amber then red.
  function tick() {
    const now = Date.now();
    document.querySelectorAll(".countdown[data-due]").forEach(function (el) {
      const ms = Date.parse(el.dataset.due) - now;
      el.textContent = fmt(ms);
      el.classList.toggle("late", ms < 0);
      el.classList.toggle("soon", ms >= 0 && ms < 5 * 60 * 1000);
      el.classList.toggle("ok", ms >= 5 * 60 * 1000);
    });
  }
  // <form data-confirm="question">: ask before a plain form does something that cannot be undone
  // (htmx forms use hx-confirm instead).
  document.addEventListener("submit", function (event) {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
  setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSettle", tick);
})();
