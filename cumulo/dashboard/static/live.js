// A page's live stream says when its session ended or what it shows is gone: the page
// follows (the login page says why; a reload shows the API's 404).
document.addEventListener("htmx:sseMessage", (event) => {
  const type = event.detail && event.detail.type;
  if (type === "session-ended") {
    window.location.href = `/login?reason=${encodeURIComponent(event.detail.data)}`;
  }
  if (type === "gone") window.location.reload();
});
