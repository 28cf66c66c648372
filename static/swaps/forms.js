// What a person picked or typed in a pushed form stays as they left it.
//
// A push replaces a whole section (htmx's ws extension swaps it in by id), and a swap
// form re-rendered by any change went back to its first option: the click that
// followed started a swap to a version nobody picked. Every element marked data-keep
// gets its value back after each pushed message, if the new form still offers it (a
// <details> marked so stays open or closed as it was).
(function () {
  "use strict";

  let kept = [];

  document.addEventListener("htmx:wsBeforeMessage", (event) => {
    const message = event.detail.message;
    if (typeof message !== "string" || message[0] === "{") return; // a chart point
    kept = [...document.querySelectorAll("[data-keep][id]")].map((e) => [
      e.id,
      e.tagName === "DETAILS" ? e.open : e.value,
    ]);
  });

  document.addEventListener("htmx:wsAfterMessage", () => {
    for (const [id, value] of kept) {
      const element = document.getElementById(id);
      if (!element) continue;
      if (element.tagName === "DETAILS") {
        element.open = value;
        continue;
      }
      if (element.value === value) continue;
      if (element.tagName === "SELECT" && ![...element.options].some((o) => o.value === value)) {
        continue; // no longer offered (retired, say): the form's own choice stands
      }
      element.value = value;
    }
    kept = [];
  });
})();
