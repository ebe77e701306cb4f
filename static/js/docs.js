/*
 * Docs pages: a copy button on every code block. The button uses app.js's delegated
 * data-copy-target handler; its labels come from the .docs-body element's data attributes
 * (translated by the template). No inline script (strict CSP).
 */
(function () {
  "use strict";

  function addCopyButtons() {
    var body = document.querySelector(".docs-body");
    if (!body) return;
    var blocks = body.querySelectorAll("div.highlight");
    Array.prototype.forEach.call(blocks, function (block, index) {
      if (block.classList.contains("output")) return;
      var code = block.querySelector("pre > code") || block.querySelector("pre");
      if (!code) return;
      if (!code.id) code.id = "docs-code-" + (index + 1);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "btn copy-btn docs-copy";
      button.textContent = body.getAttribute("data-copy-label") || "Copy";
      button.setAttribute("data-copy-target", "#" + code.id);
      button.setAttribute("data-copied-label", body.getAttribute("data-copied-label") || "Copied");
      var failed = body.getAttribute("data-copy-failed-label");
      if (failed) button.setAttribute("data-copy-failed-label", failed);
      block.classList.add("has-copy");
      block.insertBefore(button, block.firstChild);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addCopyButtons);
  } else {
    addCopyButtons();
  }
})();
