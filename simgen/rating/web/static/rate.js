// Keyboard flow of the rating page: Left = real person, Right = simulated, 1-4 = how sure (saves and
// moves on), N = write a note, Esc = leave the note box. The page works with the mouse and without
// this script too (a plain form post); the script adds the keys and the time spent on the page.
(function () {
  "use strict";
  var form = document.getElementById("answer");
  if (!form) return;
  var started = Date.now();
  var note = form.querySelector("textarea[name=note]");

  function pick(name, value) {
    var input = form.querySelector("input[name=" + name + "][value='" + value + "']");
    if (!input) return false;
    input.checked = true;
    form.querySelectorAll("input[name=" + name + "]").forEach(function (i) {
      i.parentElement.classList.toggle("selected", i.checked);
    });
    return true;
  }

  function chosen() {
    return form.querySelector("input[name=choice]:checked");
  }

  var sent = false;
  function send() {
    if (sent) return;
    sent = true;
    form.querySelector("input[name=ms]").value = String(Date.now() - started);
    form.submit();
  }

  form.addEventListener("submit", function () {
    form.querySelector("input[name=ms]").value = String(Date.now() - started);
  });
  form.addEventListener("change", function (e) {
    if (e.target.name === "choice" || e.target.name === "confidence") pick(e.target.name, e.target.value);
  });

  document.addEventListener("keydown", function (e) {
    if (e.target === note) {
      if (e.key === "Escape") note.blur();
      return;
    }
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "ArrowLeft") { pick("choice", "real"); e.preventDefault(); }
    else if (e.key === "ArrowRight") { pick("choice", "simulated"); e.preventDefault(); }
    else if (e.key === "n" || e.key === "N") { note.focus(); e.preventDefault(); }
    else if (/^[1-4]$/.test(e.key)) {
      e.preventDefault();
      pick("confidence", e.key);
      if (chosen()) send();
      else {
        var box = form.querySelector("fieldset.choice");
        box.classList.add("flash");
        setTimeout(function () { box.classList.remove("flash"); }, 600);
      }
    }
  });
})();
