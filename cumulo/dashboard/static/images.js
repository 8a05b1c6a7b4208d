// An image upload: the record first, then the file PUT with a progress bar (streamed
// on by the dashboard to the Image API).
(function () {
  const form = document.getElementById("image-upload");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const csrf = form.elements.csrf_token.value;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    const body = new FormData(form);
    body.delete("file");
    const created = await fetch("/images", { method: "POST", body });
    const answer = await created.json();
    if (!created.ok) {
      status.textContent = `${answer.error} (request ${answer.request_id})`;
      status.className = "error";
      return;
    }
    bar.hidden = false;
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `/images/${answer.id}/file`);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        bar.value = Math.round((100 * e.loaded) / e.total);
        status.textContent = `${bar.value} %`;
      }
    };
    xhr.onload = () => {
      if (xhr.status < 300) {
        bar.value = 100;
        status.textContent = "Uploaded.";
        window.location.reload();
      } else {
        const failed = JSON.parse(xhr.responseText || "{}");
        status.textContent = `${failed.error || xhr.statusText} (request ${failed.request_id || "-"})`;
        status.className = "error";
      }
    };
    xhr.send(file);
  });
})();
