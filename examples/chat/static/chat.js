// The chat page: plain JavaScript, no build step, no libraries.
//
// The room comes from the URL (/room/NAME, or "lobby" at /), the nickname from ?nick=,
// then localStorage, then a prompt. Frames from the server are JSON objects with a "kind"
// (see app.py); any other frame - e.g. `chanlite send --broadcast-text` - is shown as a
// system notice. When the socket drops the page reconnects with a growing, jittered delay
// and shows where it stands in the status button (click it to retry at once).
//
// The page remembers the position (offset and epoch) of the last kept message it showed
// and sends it when it reconnects: the server replays exactly what it missed, or says
// with a "gap" frame that it cannot (then the latest messages follow). The list of who is
// in the room comes with the welcome and follows the "joined" / "left" frames.
(function () {
  "use strict";

  var ROOM_RE = /^[A-Za-z0-9_-]{1,40}$/;
  var BAD_ROOM = "room names are 1-40 letters, digits, - and _";
  var BACKOFF_FIRST_MS = 500;
  var BACKOFF_MAX_MS = 8000;
  var TYPING_EVERY_MS = 2000; // send at most one "typing" frame this often
  var TYPING_SHOWN_MS = 3500; // forget a typist we have not heard from for this long
  var NO_RETRY = { 4400: true }; // the app refused us; trying again cannot help
  var NICK_KEY = "chanlite-chat.nick";

  function $(id) { return document.getElementById(id); }
  var ui = {
    room: $("room"),
    who: $("who"),
    status: $("status"),
    main: document.querySelector("main"),
    messages: $("messages"),
    typing: $("typing"),
    composer: $("composer"),
    text: $("text"),
    send: $("send"),
    dialog: $("nick-dialog"),
    nickForm: $("nick-form"),
    nickInput: $("nick-input"),
    people: $("people"),
    peopleCount: $("people-count"),
  };

  var room = roomFromPath(location.pathname);
  var nick = null;
  var socket = null;
  var attempt = 0; // failed connection attempts since the last welcome
  var online = false; // welcomed on the current socket
  var outage = false; // a "connection lost" notice is showing; say when it is over
  var retryTimer = null;
  var countdownTimer = null;
  var lastTypingSent = 0;
  var typists = new Map(); // nick -> timer that forgets them
  var position = null; // {offset, epoch} of the last kept message shown
  var people = new Set(); // nicknames in the room

  function roomFromPath(path) {
    var m = path.match(/^\/room\/([^/]*)\/?$/);
    if (!m) return "lobby";
    try { return decodeURIComponent(m[1]); } catch (e) { return m[1]; }
  }

  // -- connection -----------------------------------------------------------------------

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + "/ws/" + encodeURIComponent(room) +
      "?nick=" + encodeURIComponent(nick);
    if (position) {
      url += "&offset=" + position.offset + "&epoch=" + encodeURIComponent(position.epoch);
    }
    return url;
  }

  function connect() {
    clearRetry();
    if (socket) return;
    setStatus("connecting", attempt ? "reconnecting\u2026" : "connecting\u2026");
    var ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      fail("cannot open a WebSocket: " + err);
      return;
    }
    ws.binaryType = "arraybuffer";
    socket = ws;
    ws.onmessage = function (event) { if (socket === ws) onFrame(event.data); };
    // "error" is always followed by "close", which decides what happens next.
    ws.onclose = function (event) {
      if (socket !== ws) return; // a socket we replaced on purpose (new nickname)
      socket = null;
      onClosed(event);
    };
  }

  function onClosed(event) {
    var wasOnline = online;
    online = false;
    setComposer();
    clearTypists();
    if (NO_RETRY[event.code]) {
      fail(event.reason || "closed by the server (" + event.code + ")");
      addNotice("The server closed the chat: " + (event.reason || event.code), "error");
      return;
    }
    if (wasOnline && !outage) {
      outage = true;
      addNotice("Connection lost (" + (event.reason || "code " + event.code) +
        "); reconnecting\u2026", "system");
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, attempt));
    // Jitter, so that many pages do not all come back at the same instant.
    var delay = Math.round(base * (0.5 + Math.random() * 0.5));
    attempt += 1;
    var due = Date.now() + delay;
    function tick() {
      var left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setStatus("waiting", "offline \u00b7 retrying in " + left + "s");
    }
    tick();
    countdownTimer = setInterval(tick, 250);
    retryTimer = setTimeout(connect, delay);
  }

  function clearRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = countdownTimer = null;
  }

  function retryNow() {
    if (retryTimer !== null) connect();
  }

  function sendFrame(obj) {
    if (!socket || socket.readyState !== WebSocket.OPEN || !online) return false;
    socket.send(JSON.stringify(obj));
    return true;
  }

  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }

  function fail(reason) {
    clearRetry();
    setStatus("failed", reason);
    setComposer();
  }

  // -- frames from the server -----------------------------------------------------------

  function onFrame(data) {
    if (typeof data !== "string") data = new TextDecoder().decode(data);
    var msg = null;
    try { msg = JSON.parse(data); } catch (e) { /* not JSON: a raw broadcast */ }
    if (!msg || typeof msg !== "object" || typeof msg.kind !== "string") {
      addNotice(data, "raw");
      return;
    }
    if (typeof msg.offset === "number" && typeof msg.epoch === "string") {
      position = { offset: msg.offset, epoch: msg.epoch }; // where to resume from
    }
    switch (msg.kind) {
      case "welcome":
        attempt = 0;
        online = true;
        ui.status.dataset.worker = String(msg.worker);
        setStatus("open", "connected \u00b7 worker " + msg.worker);
        setComposer();
        if (outage) {
          outage = false;
          addNotice("Reconnected.", "system");
        }
        setPeople(Array.isArray(msg.people) ? msg.people : []);
        break;
      case "joined":
        addPerson(String(msg.nick));
        addNotice(msg.nick + " joined #" + room, "joined");
        break;
      case "left":
        forgetTypist(msg.nick);
        removePerson(String(msg.nick));
        addNotice(msg.nick + " left", "left");
        break;
      case "gap":
        addNotice(gapText(msg.reason), "gap");
        break;
      case "message":
        forgetTypist(msg.nick);
        addMessage(msg);
        break;
      case "typing":
        if (msg.nick !== nick) noteTypist(msg.nick);
        break;
      case "notice":
        addNotice(msg.text, "notice");
        break;
      case "error":
        addNotice("The server refused a frame: " + msg.text, "error");
        break;
      default:
        addNotice(data, "raw");
    }
  }

  function gapText(reason) {
    var why = {
      epoch: "the server lost the room's history",
      too_old: "they are no longer kept",
      future: "the server does not know where this page was",
    }[reason] || String(reason);
    return "Some messages sent while you were away cannot be shown (" + why +
      "); here are the latest.";
  }

  // -- who is here ----------------------------------------------------------------------

  function setPeople(names) {
    people = new Set(names.map(String));
    renderPeople();
  }

  function addPerson(name) {
    people.add(name);
    renderPeople();
  }

  function removePerson(name) {
    people.delete(name);
    renderPeople();
  }

  function renderPeople() {
    var names = Array.from(people).sort();
    ui.people.replaceChildren.apply(ui.people, names.map(function (name) {
      var li = span("person", name);
      li.dataset.nick = name;
      li.style.color = nickColour(name);
      return li;
    }));
    ui.peopleCount.textContent = names.length === 1 ? "1 here" : names.length + " here";
  }

  // -- the message list -----------------------------------------------------------------

  function nearBottom() {
    return ui.main.scrollHeight - ui.main.scrollTop - ui.main.clientHeight < 40;
  }

  function append(li) {
    var stick = nearBottom();
    ui.messages.appendChild(li);
    if (stick) ui.main.scrollTop = ui.main.scrollHeight;
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text; // never innerHTML: everything here came from other people
    return s;
  }

  function clock(seconds) {
    var when = typeof seconds === "number" ? new Date(seconds * 1000) : new Date();
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function nickColour(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return "hsl(" + (h % 360) + ", 55%, 38%)";
  }

  function addMessage(msg) {
    var li = document.createElement("li");
    li.className = "msg" + (msg.nick === nick ? " mine" : "");
    li.dataset.kind = "message";
    li.dataset.nick = String(msg.nick);
    var who = span("nick", String(msg.nick));
    who.style.color = nickColour(String(msg.nick));
    li.append(span("time", clock(msg.at)), who, span("text", String(msg.text)));
    append(li);
  }

  function addNotice(text, kind) {
    var li = document.createElement("li");
    li.className = "notice";
    li.dataset.kind = kind;
    li.append(span("time", clock()), span("text", String(text)));
    append(li);
  }

  // -- typing indicator -----------------------------------------------------------------

  function noteTypist(name) {
    clearTimeout(typists.get(name));
    typists.set(name, setTimeout(function () { forgetTypist(name); }, TYPING_SHOWN_MS));
    renderTypists();
  }

  function forgetTypist(name) {
    if (!typists.has(name)) return;
    clearTimeout(typists.get(name));
    typists.delete(name);
    renderTypists();
  }

  function clearTypists() {
    typists.forEach(function (timer) { clearTimeout(timer); });
    typists.clear();
    renderTypists();
  }

  function renderTypists() {
    var names = Array.from(typists.keys());
    var text = "";
    if (names.length === 1) text = names[0] + " is typing\u2026";
    else if (names.length === 2) text = names[0] + " and " + names[1] + " are typing\u2026";
    else if (names.length > 2) text = names.length + " people are typing\u2026";
    ui.typing.textContent = text;
  }

  // -- composing ------------------------------------------------------------------------

  function setComposer() {
    // The field stays usable while offline so a half-typed line is not lost; only
    // sending waits for the connection.
    ui.text.disabled = nick === null || ui.status.dataset.state === "failed";
    ui.send.disabled = !online;
    ui.text.placeholder = online ? "Write a message" : "Offline \u2014 waiting for the server";
  }

  ui.composer.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = ui.text.value.trim();
    if (!text) return;
    if (sendFrame({ text: text })) {
      ui.text.value = "";
      lastTypingSent = 0;
    }
  });

  ui.text.addEventListener("input", function () {
    var now = Date.now();
    if (ui.text.value.trim() && now - lastTypingSent > TYPING_EVERY_MS) {
      if (sendFrame({ kind: "typing" })) lastTypingSent = now;
    }
  });

  // -- nickname -------------------------------------------------------------------------

  function storedNick() {
    try { return localStorage.getItem(NICK_KEY) || ""; } catch (e) { return ""; }
  }

  function askNick() {
    ui.nickInput.value = nick || storedNick();
    ui.dialog.showModal();
  }

  function join(name) {
    nick = name.trim().slice(0, 32);
    try { localStorage.setItem(NICK_KEY, nick); } catch (e) { /* private mode: fine */ }
    ui.who.textContent = nick;
    ui.who.hidden = false;
    if (socket) {
      var old = socket;
      socket = null; // its close event is ignored: we are replacing it
      old.close(1000, "changing nickname");
    }
    online = false;
    attempt = 0;
    connect();
    setComposer();
    ui.text.focus();
  }

  ui.nickForm.addEventListener("submit", function (event) {
    var name = ui.nickInput.value.trim();
    if (!name) { event.preventDefault(); return; }
    join(name);
  });
  ui.dialog.addEventListener("cancel", function (event) {
    if (nick === null) event.preventDefault(); // Escape: we still need a name to join
  });
  ui.who.addEventListener("click", askNick);
  ui.status.addEventListener("click", retryNow);
  window.addEventListener("online", retryNow);

  // -- start ----------------------------------------------------------------------------

  ui.room.textContent = "#" + room;
  document.title = "#" + room + " \u00b7 chanlite chat";
  document.querySelectorAll(".room-name").forEach(function (n) { n.textContent = "#" + room; });
  if (!ROOM_RE.test(room)) {
    fail("no such room");
    addNotice('"' + room + '" is not a room name: ' + BAD_ROOM + ". Try /room/lobby.", "error");
    return;
  }
  var given = (new URLSearchParams(location.search).get("nick") || "").trim() || storedNick();
  if (given) join(given);
  else askNick();
})();
