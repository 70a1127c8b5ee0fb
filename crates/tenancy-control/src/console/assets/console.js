// The operator console's only script: small enhancements; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // The tenants filters search as soon as a choice changes (the Search button stays).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) { select.form.requestSubmit(); }
    });
  });
  // After an action, focus moves to its message, so screen readers and keyboards start there.
  var flash = document.getElementById("flash");
  if (flash) {
    flash.setAttribute("tabindex", "-1");
    flash.focus();
  }
});
