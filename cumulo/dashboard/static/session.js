// The session lives as long as its token. A project's session has a trust the server
// renews its token from while the user is active (pages asked for, or typing and
// clicking in this page: then this script asks for the renewal itself), up to the
// session's maximum lifetime. Ten minutes before the token's end the header says so
// and offers to renew it; at the end (or when the server says so) the renewal dialog
// opens by itself. The dialog asks for the password (then the passcode, when the
// account's rules want one) and the session gets a new token without the page being
// left: whatever was typed in the page stays, and its forms keep their CSRF token.
(() => {
  const body = document.body;
  const dialog = document.getElementById("renew-dialog");
  if (!body.dataset.sessionExpires || !dialog) return;
  const WARN_SECONDS = 600;
  const form = document.getElementById("renew-form");
  const warning = document.getElementById("session-warning");
  const minutes = document.getElementById("session-minutes");
  const openButton = document.getElementById("session-renew-open");
  const why = document.getElementById("renew-why");
  const error = document.getElementById("renew-error");
  const later = document.getElementById("renew-later");
  const passwordField = document.getElementById("renew-password-field");
  const passcodeHint = document.getElementById("renew-passcode-hint");
  const password = form.elements.renew_password;
  const passcode = form.elements.renew_passcode;
  let expiresAt = 0; // in this browser's clock
  let lastActive = Date.now();
  let silentFor = 0; // the expiry a silent renewal was last asked for
  for (const type of ["keydown", "pointerdown", "input"]) {
    document.addEventListener(type, () => { lastActive = Date.now(); }, { capture: true, passive: true });
  }
  // The same in a frame of this page (the server's console: its events stay in it).
  body.addEventListener("session-activity", () => { lastActive = Date.now(); });

  // The server's expiry in this browser's clock (the two clocks may differ).
  const learn = (expires, serverNow) => {
    expiresAt = expires + (Date.now() / 1000 - serverNow);
  };
  const secondsLeft = () => expiresAt - Date.now() / 1000;
  const expired = () => secondsLeft() <= 0;

  const askPassword = () => {
    passwordField.hidden = false;
    passcodeHint.hidden = false;
    password.required = true;
    passcode.required = false;
  };
  const askPasscode = () => {
    passwordField.hidden = true;
    passcodeHint.hidden = true;
    password.required = false;
    passcode.required = true;
    passcode.focus();
  };
  const say = (message) => {
    error.textContent = message || "";
    error.hidden = !message;
  };

  const open = () => {
    if (dialog.open) return;
    later.hidden = expired();
    why.textContent = expired()
      ? "Your session ended: its token expired. Enter your password to carry on where you left off: this page stays as it is."
      : "Your session ends soon. Enter your password to renew it: this page stays as it is.";
    say("");
    askPassword();
    dialog.showModal();
    password.focus();
  };

  // The server renews the session from its trust (no password) while its token lasts;
  // false when it cannot (no trust, or the trust ends first): the password is asked.
  const renewSilently = async () => {
    silentFor = expiresAt;
    let response;
    let answer = {};
    try {
      response = await fetch("/session/renew", {
        method: "POST",
        body: new URLSearchParams({ silent: "1" }),
        credentials: "same-origin",
        headers: { "X-CSRF-Token": form.dataset.csrf },
      });
      answer = await response.json();
    } catch (failure) {
      return false;
    }
    if (response.ok) {
      learn(answer.expires_at, answer.now);
      tick();
      body.dispatchEvent(new CustomEvent("session-renewed"));
      return true;
    }
    if (answer.login) {
      window.location.href = answer.login;
      return true;
    }
    return false;
  };

  const tick = () => {
    const left = secondsLeft();
    // Someone is working in this page (typing in a wizard asks the server nothing).
    const active = Date.now() - lastActive < WARN_SECONDS * 1000;
    if (left > 0 && left < WARN_SECONDS && active && silentFor !== expiresAt) {
      renewSilently();
    }
    warning.hidden = left >= WARN_SECONDS;
    openButton.hidden = false;
    minutes.textContent = String(Math.max(0, Math.floor(left / 60)));
    if (left <= 0) open();
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new URLSearchParams();
    fields.set("renew_password", passwordField.hidden ? "" : password.value);
    fields.set("renew_passcode", passcode.value);
    let response;
    let answer = {};
    try {
      response = await fetch("/session/renew", {
        method: "POST",
        body: fields,
        credentials: "same-origin",
        headers: { "X-CSRF-Token": form.dataset.csrf },
      });
      answer = await response.json();
    } catch (failure) {
      say(`The dashboard did not answer (${failure}). Try again.`);
      return;
    }
    password.value = "";
    passcode.value = "";
    if (response.ok && answer.needs_passcode) {
      say("");
      why.textContent = answer.message;
      askPasscode();
      return;
    }
    if (response.ok) {
      learn(answer.expires_at, answer.now);
      dialog.close();
      tick();
      body.dispatchEvent(new CustomEvent("session-renewed"));
      return;
    }
    if (answer.login) {
      window.location.href = answer.login;
      return;
    }
    say(answer.error);
    if (answer.needs_password) askPassword();
    if (answer.needs_passcode) askPasscode();
  });
  later.addEventListener("click", () => dialog.close());
  openButton.addEventListener("click", async () => {
    if (!expired() && (await renewSilently())) return;
    open();
  });
  // Escape would close the dialog: once the session has ended there is no "later".
  dialog.addEventListener("cancel", (event) => {
    if (expired()) event.preventDefault();
  });
  // The server found the session expired (a part of the page, or its live stream).
  body.addEventListener("session-expired", () => {
    expiresAt = Math.min(expiresAt, Date.now() / 1000);
    open();
  });

  // A part of the page whose request renewed the session (htmx's HX-Trigger).
  body.addEventListener("session-renewed", (event) => {
    const renewed = event.detail;
    if (renewed && typeof renewed.expires_at === "number") {
      learn(renewed.expires_at, renewed.now);
      tick();
    }
  });

  learn(parseFloat(body.dataset.sessionExpires), parseFloat(body.dataset.serverNow));
  tick();
  setInterval(tick, 5000);
})();
