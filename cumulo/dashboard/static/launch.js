// The launch wizard's flavor fit check: says at once when the flavor is too small for
// the image (the API says it too on submit).
(function () {
  const image = document.getElementById("image");
  const flavor = document.getElementById("flavor");
  const out = document.getElementById("flavor-fit");
  function check() {
    const i = image.selectedOptions[0], f = flavor.selectedOptions[0];
    if (!i || !i.value || !f) { out.textContent = ""; return; }
    const needDisk = Math.max(+i.dataset.minDisk, Math.ceil(+i.dataset.size / 1073741824));
    const problems = [];
    if (+f.dataset.disk > 0 && +f.dataset.disk < needDisk) problems.push(`the image needs ${needDisk} GiB of disk`);
    if (+f.dataset.ram < +i.dataset.minRam) problems.push(`the image needs ${i.dataset.minRam} MiB of RAM`);
    out.textContent = problems.length ? `Too small: ${problems.join(", ")}.` : "Fits the image.";
    out.className = problems.length ? "error" : "hint";
  }
  image.addEventListener("change", check);
  flavor.addEventListener("change", check);
  check();
})();
