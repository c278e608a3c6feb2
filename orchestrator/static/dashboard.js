// libvirt fabric dashboard: confirm destructive forms, copy the reservation id,
// optional auto-refresh. The page works without this file.
(function () {
  "use strict";
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      ev.preventDefault();
    }
  });
  document.addEventListener("click", function (ev) {
    var id = ev.target.getAttribute && ev.target.getAttribute("data-copy");
    if (!id) return;
    var field = document.getElementById(id);
    if (!field) return;
    field.select();
    if (navigator.clipboard) {
      navigator.clipboard.writeText(field.value).catch(function () {});
    }
    ev.target.textContent = "Copied";
  });
  var box = document.getElementById("autorefresh");
  if (box) {
    var KEY = "fabric-autorefresh";
    box.checked = window.localStorage && localStorage.getItem(KEY) === "1";
    box.addEventListener("change", function () {
      if (window.localStorage) localStorage.setItem(KEY, box.checked ? "1" : "0");
    });
    window.setInterval(function () {
      var busy = document.activeElement && /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
      // never reload away a one-time reservation id or a half-filled form
      if (box.checked && !busy && !document.getElementById("reservation-secret")) {
        window.location.reload();
      }
    }, 10000);
  }
})();
