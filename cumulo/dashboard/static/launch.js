// The launch wizard: only the chosen boot source's fields shown (all of them without
// JavaScript), and the flavor fit check: says at once when the flavor is too small for
// the image (the API says it too on submit).
(function () {
  const image = document.getElementById("image");
  const flavor = document.getElementById("flavor");
  const out = document.getElementById("flavor-fit");
  const radios = document.querySelectorAll("#boot-source input[name=source]");
  const source = () => document.querySelector("#boot-source input[name=source]:checked").value;
  function show() {
    for (const part of document.querySelectorAll("#boot-source [data-source]")) {
      part.hidden = !part.dataset.source.split(" ").includes(source());
    }
  }
  function check() {
    const i = image.selectedOptions[0], f = flavor.selectedOptions[0];
    if (source() !== "image" || !i || !i.value || !f) { out.textContent = ""; return; }
    const needDisk = Math.max(+i.dataset.minDisk, Math.ceil(+i.dataset.size / 1073741824));
    const problems = [];
    if (+f.dataset.disk > 0 && +f.dataset.disk < needDisk) problems.push(`the image needs ${needDisk} GiB of disk`);
    if (+f.dataset.ram < +i.dataset.minRam) problems.push(`the image needs ${i.dataset.minRam} MiB of RAM`);
    out.textContent = problems.length ? `Too small: ${problems.join(", ")}.` : "Fits the image.";
    out.className = problems.length ? "error" : "hint";
  }
  radios.forEach((radio) => radio.addEventListener("change", () => { show(); check(); }));
  image.addEventListener("change", check);
  flavor.addEventListener("change", check);
  show();
  check();
})();
