// The server's screen is a page of its own (GET /instances/{id}/console: noVNC and
// console.js, and nothing of this page's), shown in a frame of the Console panel while
// the panel is open, as Horizon shows it: opening the panel puts the frame in, and it
// connects; closing the panel takes the frame out, which disconnects (its websocket
// closes with its document). This page itself never loads noVNC.
(() => {
  const panel = document.getElementById("vnc-panel");
  if (!panel) return;
  const frame = document.getElementById("vnc-frame-template").content.firstElementChild;
  panel.addEventListener("toggle", () => {
    if (panel.open) panel.append(frame.cloneNode());
    else document.getElementById("vnc-frame")?.remove();
  });
})();
