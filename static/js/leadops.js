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
  // Out-of-band swaps (a claimed row, a row the board's poll redraws) replace the element that had
  // the focus, which then fell back to the top of the page: a keyboard user lost their place. The
  // new element takes it: where it asks with [autofocus], else its first link or button, else itself.
  let focusedId = null;
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    const target = event.detail && event.detail.target;
    if (target && target.id && target !== document.body && target.contains(document.activeElement)) {
      focusedId = target.id;
    }
  });
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    const swapped = event.target;  // each element the swap put in the page
    if (!swapped.isConnected) return;
    let wanted = swapped.matches("[autofocus]") ? swapped : swapped.querySelector("[autofocus]");
    if (!wanted && focusedId && swapped.id === focusedId) {
      wanted = swapped.querySelector("a[href], button:not([disabled]), select, textarea, input:not([type=hidden])");
      if (!wanted) {
        swapped.tabIndex = -1;
        wanted = swapped;
      }
    }
    if (swapped.id === focusedId) focusedId = null;
    if (wanted) wanted.focus();
  });
  setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSettle", tick);
})();
