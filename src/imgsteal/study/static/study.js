// Progressive enhancement only: the questionnaire works without this file.
// Keys 1-5 pick a rating on an item page.
document.addEventListener("keydown", function (event) {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  var target = event.target;
  if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" && target.type === "text")) return;
  if (!/^[1-5]$/.test(event.key)) return;
  var input = document.querySelector('input[name="rating"][value="' + event.key + '"]');
  if (input) { input.checked = true; input.focus(); event.preventDefault(); }
});
