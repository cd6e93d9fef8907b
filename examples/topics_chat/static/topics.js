// The topics chat page: the phoenix client (window.Phoenix) against chanlite.
"use strict";
(function () {
  const query = new URLSearchParams(location.search);
  const nick = query.get("nick") || "guest" + Math.floor(Math.random() * 1000);
  const roomName = query.get("room") || "lobby";
  const {Socket, Presence, LongPoll} = window.Phoenix;
  const status = document.getElementById("status");
  const messages = document.getElementById("messages");
  const members = document.getElementById("members");
  document.getElementById("room").textContent = roomName;

  function line(kind, nick, text) {
    const li = document.createElement("li");
    li.dataset.kind = kind;
    if (nick) {
      li.dataset.nick = nick;
      const b = document.createElement("b");
      b.textContent = nick;
      li.append(b);
    }
    li.append(document.createTextNode(text));
    messages.append(li);
    messages.scrollTop = messages.scrollHeight;
  }

  // Without WebSocket (blocked, or removed) phoenix.js uses long-poll from the start;
  // with it, long-poll takes over if the WebSocket does not open within 2.5 s.
  const socket = new Socket("/socket", {
    params: {nick},
    longPollFallbackMs: window.WebSocket ? 2500 : undefined,
    reconnectAfterMs: tries => [100, 250, 500, 1000][tries - 1] || 2000,
    rejoinAfterMs: tries => [200, 500, 1000][tries - 1] || 2000,
  });
  socket.onOpen(() => {
    status.dataset.state = "open";
    status.dataset.transport = socket.transport === LongPoll ? "longpoll" : "websocket";
    status.textContent = "connected (" + status.dataset.transport + ")";
  });
  socket.onClose(() => { status.dataset.state = "closed"; status.textContent = "reconnecting…"; });
  socket.connect();

  // The ref of the last message seen: a rejoin sends it and gets exactly what it missed.
  let since = null;
  const channel = socket.channel("room:" + roomName, () => (since ? {since} : {last: 50}));
  channel.on("message", (msg, ref) => {
    line("message", msg.nick, msg.text);
    since = ref;
  });
  channel.joinPush.receive("ok", reply => {
    status.dataset.worker = String(reply.worker);
    const history = reply.history || {};
    if (history.recovered === false && since) {
      line("system", null, "Some messages could not be recovered (" + history.reason + ").");
    }
  });
  channel.joinPush.receive("error", reply => line("system", null, "Cannot join: " + reply.reason));
  channel.join();

  const presence = new Presence(channel);
  presence.onSync(() => {
    members.replaceChildren(...presence.list((key, {metas}) => {
      const li = document.createElement("li");
      li.dataset.nick = key;
      li.textContent = metas.length > 1 ? key + " (" + metas.length + " tabs)" : key;
      return li;
    }));
  });

  document.getElementById("say").addEventListener("submit", event => {
    event.preventDefault();
    const input = document.getElementById("text");
    const text = input.value;
    input.value = "";
    channel.push("say", {text}).receive("error", reply => line("system", null, "Not sent: " + reply.reason));
  });
})();
