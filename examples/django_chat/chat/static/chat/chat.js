// One WebSocket per room page: history on join, live messages, typing, announcements.
(function () {
  "use strict";
  const room = JSON.parse(document.getElementById("room-name").textContent);
  const log = document.getElementById("log");
  const typingLine = document.getElementById("typing");
  const status = document.getElementById("status");
  const input = document.getElementById("text");
  const typing = new Map(); // user -> timer that clears a stale "typing" flag
  let socket = null;
  let typingSent = false;
  let typingTimer = null;
  let retry = 500;

  function add(cls, who, text, at) {
    const li = document.createElement("li");
    li.className = cls;
    if (who) {
      const b = document.createElement("b");
      b.textContent = who + ": ";
      li.appendChild(b);
    }
    li.appendChild(document.createTextNode(text));
    if (at) li.title = new Date(at).toLocaleString();
    log.appendChild(li);
    li.scrollIntoView({ block: "end" });
  }

  function showTyping() {
    const names = Array.from(typing.keys());
    typingLine.textContent = names.length ? names.join(", ") + (names.length > 1 ? " are" : " is") + " typing..." : "";
  }

  function setTyping(user, on) {
    clearTimeout(typing.get(user));
    typing.delete(user);
    if (on) typing.set(user, setTimeout(() => setTyping(user, false), 6000));
    showTyping();
  }

  function sendTyping(on) {
    if (socket && socket.readyState === WebSocket.OPEN && on !== typingSent) {
      typingSent = on;
      socket.send(JSON.stringify({ type: "typing", typing: on }));
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/chat/" + encodeURIComponent(room));
    socket.onopen = () => { status.textContent = "connected"; retry = 500; };
    socket.onclose = () => {
      status.textContent = "disconnected; reconnecting...";
      typing.clear(); showTyping();
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
    socket.onmessage = (e) => {
      const data = JSON.parse(e.data);
      if (data.type === "history") {
        log.textContent = "";
        data.messages.forEach((m) => add("message", m.user, m.text, m.at));
      } else if (data.type === "message") {
        setTyping(data.user, false);
        add("message", data.user, data.text, data.at);
      } else if (data.type === "typing") {
        setTyping(data.user, data.typing);
      } else if (data.type === "announcement") {
        add("announcement", "Announcement from " + data.user, data.text);
      }
    };
  }

  document.getElementById("send").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "message", text: text }));
    input.value = "";
    clearTimeout(typingTimer);
    sendTyping(false);
  });
  input.addEventListener("input", () => {
    sendTyping(input.value.length > 0);
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => sendTyping(false), 3000);
  });
  connect();
})();
