// devtrust console: a few lines, no framework, nothing fetched but this server's pages.
(function () {
  "use strict";
  // Filters: a changed select applies at once (the Filter button does the same without JS).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.requestSubmit(); });
  });
  // The enrollment command: copy it with one click.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.dataset.copy);
      field.select();
      if (navigator.clipboard) { navigator.clipboard.writeText(field.value); }
      button.textContent = "Copied";
    });
  });
  // Live sync progress: the runs are fetched again every two seconds.
  var live = document.querySelector("[data-live]");
  if (live) {
    var refresh = function () {
      fetch(live.dataset.live, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) { if (html !== null) { live.innerHTML = html; } })
        .catch(function () {})
        .finally(function () { window.setTimeout(refresh, 2000); });
    };
    window.setTimeout(refresh, 2000);
  }
})();
