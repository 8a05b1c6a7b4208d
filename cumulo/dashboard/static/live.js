// A page's live stream says when its session ended or what it shows is gone: the page
// follows (the login page says why; a reload shows the API's 404). A session that
// expired can be renewed in place (session.js): the page stays.
document.addEventListener("htmx:sseMessage", (event) => {
  const type = event.detail && event.detail.type;
  if (type === "session-ended") {
    if (event.detail.data === "expired" && document.getElementById("renew-dialog")) {
      document.body.dispatchEvent(new CustomEvent("session-expired"));
      return;
    }
    window.location.href = `/login?reason=${encodeURIComponent(event.detail.data)}`;
  }
  if (type === "gone") window.location.reload();
});
