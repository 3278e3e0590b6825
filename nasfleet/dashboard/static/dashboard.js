// Refresh the page's <main> in place every few seconds while a job on it runs (the body says
// data-live="1"), so a running job can be watched without reloading. Stops once nothing runs; a lost
// session (the server redirects to the login form) shows the login form.
(function () {
  "use strict";
  var seconds = Number(document.body.dataset.refresh || 0) || 2;

  function schedule(delay) {
    window.setTimeout(poll, delay * 1000);
  }

  function poll() {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected) {
          window.location.assign(response.url);
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var next = new DOMParser().parseFromString(html, "text/html");
        var main = next.querySelector("main");
        if (main) {
          document.querySelector("main").replaceWith(document.importNode(main, true));
        }
        document.body.dataset.live = next.body.dataset.live;
        if (next.body.dataset.live === "1") {
          schedule(seconds);
        }
      })
      .catch(function () {
        schedule(seconds * 3);  // the server may be restarting: try again, less often
      });
  }

  if (document.body.dataset.live === "1") {
    schedule(seconds);
  }
})();
