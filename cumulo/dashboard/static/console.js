// The server's screen, the console page (console.html) shown in a frame of the server
// page while its Console panel is open: the page asks the dashboard for a console
// (Compute's remote-consoles, with the session's token) and connects noVNC's RFB to the
// websocket of the noVNC proxy it names; the panel closed, the frame and its connection
// go. Text can be typed into the guest as key presses or put on its clipboard; "view
// only" sends nothing. The page around the frame keeps the session (session.js): it is
// told of the user's activity here, and of a session found expired.
(() => {
  const section = document.getElementById("vnc");
  if (!section) return;
  const screen = document.getElementById("vnc-screen");
  const status = document.getElementById("vnc-status");
  const ctrlAltDel = document.getElementById("vnc-ctrl-alt-del");
  const reconnect = document.getElementById("vnc-reconnect");
  const viewOnly = document.getElementById("vnc-view-only");
  const text = document.getElementById("vnc-text");
  const type = document.getElementById("vnc-type");
  const paste = document.getElementById("vnc-paste");
  const clipboard = document.getElementById("vnc-clipboard");
  let rfb = null;
  let attempt = 0; // a newer attempt makes an older one's late answers moot
  // The server page around this frame (the frame's own body when opened on its own).
  const around = window.parent === window ? document.body : window.parent.document.body;
  for (const type of ["keydown", "pointerdown", "input"]) {
    document.addEventListener(
      type,
      () => around.dispatchEvent(new CustomEvent("session-activity")),
      { capture: true, passive: true },
    );
  }

  const show = (state, text) => {
    section.dataset.state = state;
    status.textContent = text;
    const sending = state === "connected" && !viewOnly.checked;
    for (const button of [ctrlAltDel, type, paste]) button.disabled = !sending;
    reconnect.hidden = !["disconnected", "failed"].includes(state);
  };

  const askForConsole = async () => {
    const response = await fetch(section.dataset.websocket, {
      method: "POST",
      credentials: "same-origin",
      // HX-Request: an expired session answers 401 (to be renewed in place, session.js)
      // rather than a redirect to the login page.
      headers: { "X-CSRF-Token": section.dataset.csrf, "HX-Request": "true" },
    });
    if (response.status === 401) {
      around.dispatchEvent(new CustomEvent("session-expired")); // the page's dialog opens
      throw new Error(
        around === document.body
          ? "The session has expired: log in again, then connect again."
          : "The session has expired: renew it (the page asks for your password), then connect again.",
      );
    }
    const login = response.headers.get("HX-Redirect"); // no session: the login page
    if (login) {
      window.top.location.href = login;
      throw new Error("The session has ended.");
    }
    const type = response.headers.get("content-type") || "";
    if (!type.startsWith("application/json")) {
      throw new Error(`The dashboard answered ${response.status}.`);
    }
    const answer = await response.json();
    if (!response.ok) {
      const id = answer.request_id ? ` (request ${answer.request_id})` : "";
      throw new Error(`${answer.error}${id}`);
    }
    return answer.websocket;
  };

  const disconnect = () => {
    attempt += 1;
    if (rfb) {
      const old = rfb;
      rfb = null;
      old.disconnect();
    }
    screen.replaceChildren();
  };

  const connect = async () => {
    disconnect();
    const mine = attempt;
    show("connecting", "Connecting…");
    let websocket;
    let RFB;
    try {
      [websocket, { RFB }] = await Promise.all([
        askForConsole(),
        import("/static/vendor/novnc-rfb.min.js"),
      ]);
    } catch (error) {
      if (mine === attempt) show("failed", `No console: ${error.message}`);
      return;
    }
    if (mine !== attempt) return;
    const client = new RFB(screen, websocket, { shared: true });
    rfb = client;
    client.scaleViewport = true;
    client.viewOnly = viewOnly.checked;
    client.background = "#111827";
    client.addEventListener("clipboard", (event) => {
      // The guest's clipboard changed (a clipboard agent, or another viewer's paste).
      clipboard.hidden = false;
      clipboard.textContent = `The guest's clipboard: ${event.detail.text}`;
    });
    let desktop = ""; // the server's name for its screen, told before "connect"
    client.addEventListener("desktopname", (event) => {
      desktop = event.detail.name;
    });
    client.addEventListener("connect", () => {
      if (rfb === client) show("connected", desktop ? `Connected to ${desktop}.` : "Connected.");
    });
    client.addEventListener("disconnect", (event) => {
      if (rfb !== client) return;
      rfb = null;
      show("disconnected", event.detail.clean ? "Disconnected." : "The connection was lost.");
    });
    client.addEventListener("securityfailure", (event) => {
      if (rfb !== client) return;
      rfb = null; // its disconnect event follows: this says why
      show("failed", `Refused by the VNC server: ${event.detail.reason}`);
    });
    client.addEventListener("credentialsrequired", () => {
      // Compute's consoles carry their right in the token: a password is not ours to give.
      if (rfb === client) {
        show("failed", "The VNC server asks for a password, which this console does not have.");
        disconnect();
      }
    });
  };

  reconnect.addEventListener("click", connect);
  ctrlAltDel.addEventListener("click", () => {
    if (rfb) rfb.sendCtrlAltDel();
  });
  viewOnly.addEventListener("change", () => {
    if (rfb) rfb.viewOnly = viewOnly.checked;
    show(section.dataset.state, status.textContent);
  });
  type.addEventListener("click", () => {
    if (rfb) typeText(rfb, text.value);
  });
  paste.addEventListener("click", () => {
    if (rfb) rfb.clipboardPasteFrom(text.value);
  });

  // Keysyms (X11 keysymdef.h). VNC sends keys, not characters: the server turns each
  // keysym into a key of its keyboard layout, so a character typed with Shift on a US
  // keyboard is sent between Shift's press and release.
  const XK = { Return: 0xff0d, Tab: 0xff09, Shift_L: 0xffe1 };
  const SHIFTED = /[A-Z~!@#$%^&*()_+{}|:"<>?]/;
  const keysym = (character) => {
    const point = character.codePointAt(0);
    if ((point >= 0x20 && point <= 0x7e) || (point >= 0xa0 && point <= 0xff)) return point;
    return 0x01000000 + point; // a Unicode keysym
  };
  const typeText = (client, value) => {
    for (const character of value.replace(/\r\n?/g, "\n")) {
      if (character === "\n") client.sendKey(XK.Return, "Enter");
      else if (character === "\t") client.sendKey(XK.Tab, "Tab");
      else if (SHIFTED.test(character)) {
        client.sendKey(XK.Shift_L, "ShiftLeft", true);
        client.sendKey(keysym(character), null);
        client.sendKey(XK.Shift_L, "ShiftLeft", false);
      } else client.sendKey(keysym(character), null);
    }
  };

  connect(); // the frame is there while the panel is open
})();
