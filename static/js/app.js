/*
 * TokenPapa — small, unobtrusive behaviours. No inline scripts anywhere (strict CSP).
 *
 * Conventions (all opt-in through data attributes):
 *   <button type="button" data-copy-target="#id">Copy</button>
 *       copies the text of #id (the value for inputs/textareas) to the clipboard and shows
 *       "Copied" for a moment. Optional: data-copied-label="…", data-copy-failed-label="…".
 *   <canvas data-chart="ID"></canvas> + {{ value|json_script:"ID" }}
 *       draws a Chart.js chart from {"labels": [...], "datasets": [{"label": "...", "data": [...]}],
 *       "type": "bar", "yLabel": "USD", "stacked": false}. Needs vendor/chart.umd.min.js on
 *       the page ({% block extra_js %}). Put the canvas in a .chart-box to give it a height.
 *   <form data-confirm="Really?"> (or a submit button with data-confirm)
 *       asks confirm() before submitting; cancelling stops the submit (htmx included).
 *   <form data-disable-on-submit>
 *       disables its submit buttons once submitted (no double top-ups).
 *   htmx requests carry the X-CSRFToken header, read from <meta name="csrf-token">.
 *   <tr data-href="?model=x"> (a breakdown row on the activity page)
 *       a click anywhere in the row follows its link (the row's own <a> works without JS).
 *   The browser's time zone (Intl) is kept in the tp_tz cookie: the portal counts days in it
 *       for people who chose none (accounts/timezones.py).
 */
(function () {
  "use strict";

  /* ---------- helpers ---------- */

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    var token = meta ? meta.getAttribute("content") : "";
    if (token && token !== "NOTPROVIDED") return token;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  var liveRegion = null;
  function announce(text) {
    if (!liveRegion) {
      liveRegion = document.createElement("div");
      liveRegion.className = "visually-hidden";
      liveRegion.setAttribute("aria-live", "polite");
      liveRegion.setAttribute("role", "status");
      document.body.appendChild(liveRegion);
    }
    liveRegion.textContent = "";
    window.setTimeout(function () { liveRegion.textContent = text; }, 50);
  }

  /* ---------- (a) copy buttons ---------- */

  function textOf(el) {
    if (el.matches("input, textarea, select")) return el.value;
    return (el.textContent || "").replace(/^\s+|\s+$/g, "");
  }

  function copyWithSelection(text) {
    var helper = document.createElement("textarea");
    helper.className = "copy-helper";
    helper.value = text;
    helper.setAttribute("readonly", "");
    helper.setAttribute("aria-hidden", "true");
    helper.setAttribute("tabindex", "-1");
    document.body.appendChild(helper);
    var active = document.activeElement;
    helper.select();
    helper.setSelectionRange(0, text.length);
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    document.body.removeChild(helper);
    if (active && typeof active.focus === "function") active.focus();
    return ok;
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(
        function () { return true; },
        function () { return copyWithSelection(text); }
      );
    }
    return Promise.resolve(copyWithSelection(text));
  }

  function selectContents(el) {
    if (el.matches("input, textarea")) {
      el.focus();
      el.select();
      return;
    }
    var range = document.createRange();
    range.selectNodeContents(el);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function flash(button, label, cls) {
    if (button._copyTimer) {
      window.clearTimeout(button._copyTimer);
    } else {
      button._copyOriginal = button.innerHTML;
    }
    button.textContent = label;
    button.classList.remove("is-copied", "is-failed");
    button.classList.add(cls);
    button._copyTimer = window.setTimeout(function () {
      button.innerHTML = button._copyOriginal;
      button.classList.remove(cls);
      button._copyTimer = null;
    }, 1800);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) return;
    event.preventDefault();
    var target = null;
    try {
      target = document.querySelector(button.getAttribute("data-copy-target"));
    } catch (e) {
      target = null;
    }
    if (!target) return;
    var text = textOf(target);
    copyText(text).then(function (ok) {
      if (ok) {
        var copied = button.getAttribute("data-copied-label") || "Copied";
        flash(button, copied, "is-copied");
        announce(copied);
      } else {
        var failed = button.getAttribute("data-copy-failed-label") || "Press Ctrl+C to copy";
        selectContents(target);
        flash(button, failed, "is-failed");
        announce(failed);
      }
    });
  });

  /* ---------- (b) charts ---------- */

  var PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6",
    "#14b8a6", "#ec4899", "#64748b", "#84cc16"];
  var charts = typeof WeakMap === "function" ? new WeakMap() : null;

  function formatNumber(value) {
    if (value === null || value === undefined || value === "") return "";
    var n = Number(value);
    if (!isFinite(n)) return String(value);
    return n.toLocaleString(undefined, { minimumFractionDigits: 0, maximumFractionDigits: 6 });
  }

  function withAlpha(hex, alpha) {
    var m = /^#([0-9a-f]{6})$/i.exec(hex);
    if (!m) return hex;
    var n = parseInt(m[1], 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function buildConfig(spec) {
    var type = spec.type || "bar";
    var radial = type === "pie" || type === "doughnut" || type === "polarArea";
    var yLabel = spec.yLabel || "";
    var datasets = (spec.datasets || []).map(function (ds, i) {
      var color = PALETTE[i % PALETTE.length];
      var out = Object.assign({}, ds);
      if (radial) {
        if (!out.backgroundColor) {
          out.backgroundColor = (ds.data || []).map(function (_, j) { return PALETTE[j % PALETTE.length]; });
        }
        if (!out.borderColor) out.borderColor = "#ffffff";
      } else if (type === "line") {
        if (!out.borderColor) out.borderColor = color;
        if (!out.backgroundColor) out.backgroundColor = withAlpha(color, 0.12);
        if (out.fill === undefined) out.fill = (spec.datasets || []).length === 1;
        if (out.tension === undefined) out.tension = 0.25;
        if (out.pointRadius === undefined) out.pointRadius = 2.5;
      } else {
        if (!out.backgroundColor) out.backgroundColor = color;
        if (!out.borderColor) out.borderColor = color;
        if (out.borderRadius === undefined) out.borderRadius = 4;
        if (out.maxBarThickness === undefined) out.maxBarThickness = 44;
      }
      return out;
    });

    var suffix = yLabel ? " " + yLabel : "";
    var options = {
      responsive: true,
      animation: window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches ? false : undefined,
      interaction: radial ? undefined : { mode: "index", intersect: false },
      plugins: {
        legend: { display: radial || datasets.length > 1, position: "bottom",
          labels: { boxWidth: 12, boxHeight: 12, usePointStyle: false } },
        tooltip: {
          callbacks: {
            label: function (ctx) {
              var raw = radial ? ctx.raw : (ctx.parsed && ctx.parsed.y !== undefined ? ctx.parsed.y : ctx.raw);
              var name = ctx.dataset.label || (radial ? ctx.label : "");
              return (name ? name + ": " : "") + formatNumber(raw) + suffix;
            }
          }
        }
      }
    };
    if (!radial) {
      options.scales = {
        x: {
          stacked: !!spec.stacked,
          grid: { display: false },
          ticks: { maxRotation: 0, autoSkip: true }
        },
        y: {
          stacked: !!spec.stacked,
          beginAtZero: true,
          title: { display: !!yLabel, text: yLabel },
          grid: { color: "#eceef2" },
          border: { display: false },
          ticks: { callback: function (value) { return formatNumber(value); } }
        }
      };
    }
    return { type: type, data: { labels: spec.labels || [], datasets: datasets }, options: options };
  }

  function initCharts(root) {
    if (!root || !root.querySelectorAll) return;
    var canvases = [];
    if (root.matches && root.matches("canvas[data-chart]")) canvases.push(root);
    Array.prototype.push.apply(canvases, root.querySelectorAll("canvas[data-chart]"));
    if (!canvases.length) return;
    if (typeof window.Chart !== "function") {
      if (window.console) console.warn("TokenPapa: chart.umd.min.js is not loaded on this page");
      return;
    }
    var Chart = window.Chart;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#555e6e";
    canvases.forEach(function (canvas) {
      if (charts && charts.has(canvas)) return;
      var source = document.getElementById(canvas.getAttribute("data-chart"));
      if (!source) return;
      var spec;
      try {
        spec = JSON.parse(source.textContent);
      } catch (e) {
        if (window.console) console.warn("TokenPapa: bad chart data in #" + source.id, e);
        return;
      }
      var config = buildConfig(spec || {});
      var box = canvas.parentElement;
      config.options.maintainAspectRatio = !(box && box.classList.contains("chart-box"));
      if (config.options.maintainAspectRatio) config.options.aspectRatio = 2.4;
      if (!canvas.hasAttribute("role")) canvas.setAttribute("role", "img");
      if (!canvas.hasAttribute("aria-label") && spec && spec.datasets && spec.datasets.length) {
        canvas.setAttribute("aria-label", spec.datasets.map(function (d) { return d.label; }).join(", "));
      }
      var chart = new Chart(canvas, config);
      if (charts) charts.set(canvas, chart);
    });
  }

  /* ---------- (c) confirm before submit ---------- */

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var submitter = event.submitter;
    var message = (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || !form.hasAttribute("data-disable-on-submit")) return;
    // After the form data set is built, so the submitter's name/value still goes along.
    window.setTimeout(function () {
      form.querySelectorAll('button[type="submit"], button:not([type]), input[type="submit"]')
        .forEach(function (b) { b.disabled = true; });
    }, 0);
  });

  /* ---------- (d) clickable rows, the browser's time zone ---------- */

  document.addEventListener("click", function (event) {
    var row = event.target.closest("tr[data-href]");
    if (!row || event.target.closest("a, button, input, select, textarea")) return;
    window.location.href = row.getAttribute("data-href");
  });

  function rememberTimeZone() {
    var zone = "";
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      zone = "";
    }
    if (!zone || !/^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) return;
    var match = document.cookie.match(/(?:^|;\s*)tp_tz=([^;]+)/);
    if (match && decodeURIComponent(match[1]) === zone) return;
    document.cookie = "tp_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; SameSite=Lax" +
      (window.location.protocol === "https:" ? "; Secure" : "");
  }

  /* ---------- (e) htmx: CSRF header ---------- */

  function boot() {
    document.body.addEventListener("htmx:configRequest", function (event) {
      var token = csrfToken();
      if (token) event.detail.headers["X-CSRFToken"] = token;
    });
    // Charts in content swapped in by htmx.
    document.body.addEventListener("htmx:load", function (event) { initCharts(event.target); });
    initCharts(document);
    rememberTimeZone();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", boot);
  } else {
    boot();
  }
})();
