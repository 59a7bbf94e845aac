// The chat demo page: a plain ES module on a "wire", our browser client (wire-realtime.js, the default) or the
// official socket.io-client (wire-socketio.js, with ?wire=socketio when the demo was given its bundle).

const NS = "/chat";
const TYPING_EVERY = 2000; // ms between two typing notices while the user types
const TYPING_SHOWN = 4000; // ms a typing notice stays on screen
const KEEP = 200; // messages kept per room in the page
const GROUP_GAP = 5 * 60; // s: a message this long after the previous one by the same author starts a new group
const AVATAR_COLOURS = 8; // .avatar.c0 ... .c7 in chat.css (no inline style: the page's CSP forbids it)
const WIRES = { realtime: "starlette-realtime", socketio: "socket.io-client" };
const NO_BUNDLE = ["socket.io-client is off: start the demo with ", "--socketio-client PATH",
  ", PATH being dist/socket.io.min.js of npm's socket.io-client package."];
const STATES = { connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…", offline: "Offline", closed: "Disconnected" };

const $ = (id) => document.getElementById(id);
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** Everything the page knows; `window.demo` for the console (and the browser tests). */
const demo = { wire: null, client: null, user: null, current: null, rooms: new Map(), state: "closed", info: {}, seq: 0 };
window.demo = demo;

// ------------------------------------------------------------------------------------------------ which client

// The demo says whether it serves socket.io-client's bundle (the page never loads code from elsewhere); the page
// runs on it when the address asks for it with ?wire=socketio, on our client otherwise.
const asked = new URLSearchParams(location.search).get("wire") === "socketio" ? "socketio" : "realtime";
const wireChosen = fetch(new URL("config.json", document.baseURI))
  .then((res) => res.json())
  .catch(() => ({}))
  .then((config) => {
    demo.wireKind = asked === "socketio" && config.socketioClient ? "socketio" : "realtime";
    renderWireSwitch(Boolean(config.socketioClient));
    return demo.wireKind;
  });

/** Why the switch to socket.io-client is off, as nodes: the option in one piece. */
const noBundle = () => NO_BUNDLE.map((part, i) => (i === 1 ? el("code", { textContent: part }) : part));

/** Switching client reloads the page on the other one (the name is kept: the page signs in again by itself). */
function renderWireSwitch(available) {
  for (const button of document.querySelectorAll("#wire button")) {
    const kind = button.dataset.wire;
    const off = kind === "socketio" && !available;
    button.setAttribute("aria-pressed", String(kind === demo.wireKind));
    button.setAttribute("aria-disabled", String(off));
    button.title = off ? NO_BUNDLE.join("") : `Run this page on ${WIRES[kind]}`;
    button.addEventListener("click", () => {
      if (off) return notice(...noBundle());
      if (kind === demo.wireKind) return;
      const url = new URL(location.href);
      url.searchParams.set("wire", kind);
      location.assign(url);
    });
  }
  $("wire-note").replaceChildren(...noBundle(), asked !== demo.wireKind ? ` This page uses ${WIRES.realtime}.` : "");
  $("wire-note").hidden = available;
}

function room(name) {
  let r = demo.rooms.get(name);
  if (!r) {
    // members: online now; gone: users seen in the room (present, or authors) who are offline now.
    // latest: the newest $presence event per user, {seq, status}, until a listing reflects it.
    r = { name, messages: new Map(), pending: new Map(), members: new Set(), gone: new Set(), presenceSeq: -1, latest: new Map(), typing: new Map(), unread: 0 };
    demo.rooms.set(name, r);
  }
  return r;
}

// ------------------------------------------------------------------------------------------------ login

async function fetchToken(name) {
  const res = await fetch(new URL("token", document.baseURI), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `the server answered ${res.status}`);
  return body;
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = $("login-error");
  error.hidden = true;
  try {
    const { token, user } = await fetchToken($("name").value);
    sessionStorage.setItem("demo.name", user);
    start(user, token);
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
});

// ------------------------------------------------------------------------------------------------ connection

async function start(user, firstToken) {
  demo.user = user;
  $("login").hidden = true;
  $("chat").hidden = false;
  $("me").hidden = false;
  $("me").replaceChildren("Signed in as ", el("b", { textContent: user }));
  const saved = JSON.parse(sessionStorage.getItem("demo.rooms") || "[]");
  for (const name of saved.length ? saved : ["lobby"]) room(name);
  select(demo.rooms.keys().next().value);
  let token = firstToken;
  let wire;
  try {
    const kind = await wireChosen;
    if (kind !== asked) notice(...noBundle());
    const { createWire } = await import(`./wire-${kind}.js`);
    wire = demo.wire = await createWire({
      namespace: NS,
      // Asked on every connect: tokens expire, and a restarted demo signs with a new key.
      auth: async () => {
        const fresh = token ?? (await fetchToken(user)).token;
        token = null;
        return { token: fresh };
      },
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      onError: (err) => console.warn(`${WIRES[demo.wireKind]}:`, err),
    });
  } catch (error) {
    Object.assign(demo, { state: "closed", info: { error } });
    return renderStatus();
  }
  demo.client = wire.client;
  wire.onState((state, info) => {
    const was = demo.state;
    demo.state = state;
    demo.info = info;
    renderStatus();
    // Presence is only known while connected: the list turns to "last known" (and this user offline) otherwise.
    if ((was === "connected") !== (state === "connected")) renderMembers();
  });
  wire.on("connect", onConnect);
  wire.on("recovery_failed", () => notice("The server did not know this session any more (a restart?): reloaded the rooms."));
  wire.on("message", (msg) => addMessage(msg, "live"));
  wire.on("typing", onTyping);
  wire.on("$presence", onPresence);
  wire.on("$resync", ({ room: name }) => demo.rooms.has(name) && rejoin(name));
  wire.connect().catch(() => {}); // a terminal failure shows up as the "closed" state
}

// Recovered: the server restored the rooms and replayed what was missed; only refresh who is online.
// Not recovered (first connect, or the server lost the session): join every room again and load its history.
function onConnect({ recovered }) {
  for (const name of demo.rooms.keys()) {
    if (recovered) refreshMembers(name);
    else rejoin(name);
  }
}

async function rejoin(name) {
  // A new session (maybe a restarted server): presence sequence numbers start again from its listing.
  if (demo.rooms.has(name)) Object.assign(room(name), { presenceSeq: -1, latest: new Map() });
  try {
    const joined = await demo.wire.call("join", name);
    if (!demo.rooms.has(name)) return;
    for (const msg of joined.history) addMessage(msg, "history");
    setMembers(joined.presence);
  } catch (err) {
    notice(`Could not join #${name}: ${err.message}`);
    if (err.code === "bad_room" || err.code === "forbidden") leaveRoom(name);
  }
}

// A listing replaces the room's members; it reflects every $presence event up to its `seq`. An event newer
// than the listing may have arrived first (the join answer is sent after the events of its room that came
// while it was read): that event still holds, or a user who went offline meanwhile would stay listed online.
function setMembers({ room: name, seq, members }) {
  if (!demo.rooms.has(name)) return;
  const r = room(name);
  const online = new Set(members.map((m) => m.user));
  for (const [user, event] of r.latest) {
    if (event.seq <= seq) r.latest.delete(user);
    else if (event.status === "online") online.add(user);
    else online.delete(user);
  }
  for (const user of r.members) if (!online.has(user)) r.gone.add(user); // went offline while we were away
  for (const user of online) r.gone.delete(user);
  Object.assign(r, { members: online, presenceSeq: seq });
  if (name === demo.current) renderMembers();
}

async function refreshMembers(name) {
  try {
    setMembers(await demo.wire.call("$presence.list", { room: name }));
  } catch (err) {
    console.warn("members:", err);
  }
}

/** The presence handlers, for the console (and the browser tests): what a listing and an event do. */
demo.presence = { setMembers: (list) => setMembers(list), onPresence: (event) => onPresence(event) };

/** Close the socket as a network failure would, to watch the page recover its session. */
demo.dropConnection = () => demo.wire?.drop();

// ------------------------------------------------------------------------------------------------ rooms

function saveRooms() {
  sessionStorage.setItem("demo.rooms", JSON.stringify([...demo.rooms.keys()]));
}

function select(name) {
  demo.current = name;
  room(name).unread = 0;
  $("room-title").textContent = name;
  saveRooms();
  renderRooms();
  renderMessages();
  renderMembers();
  renderTyping();
}

function joinRoom(name) {
  const isNew = !demo.rooms.has(name);
  room(name);
  select(name);
  if (isNew && demo.wire?.state === "connected") rejoin(name); // otherwise the next "connect" joins it
}

function leaveRoom(name) {
  if (!demo.rooms.delete(name)) return;
  demo.wire?.emit("leave", name);
  if (!demo.rooms.size) room("lobby");
  if (demo.current === name || !demo.rooms.has(demo.current)) select(demo.rooms.keys().next().value);
  else (saveRooms(), renderRooms());
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("room-name").value.trim().toLowerCase();
  if (!name) return;
  $("room-name").value = "";
  joinRoom(name);
});

// ------------------------------------------------------------------------------------------------ messages

function addMessage(msg, source) {
  if (!demo.rooms.has(msg.room)) return;
  const r = room(msg.room);
  if (r.messages.has(msg.id)) return; // live and in the history, or replayed and acknowledged
  r.messages.set(msg.id, { ...msg, source });
  if (!r.members.has(msg.user)) r.gone.add(msg.user); // an author who is not here now
  if (msg.user === demo.user) { // our own message, back through the room before its ACK: not pending any more
    const local = [...r.pending.values()].find((m) => m.text === msg.text && !m.failed);
    if (local) (r.pending.delete(local.id), renderStatus());
  }
  if (r.messages.size > KEEP) r.messages.delete(r.messages.keys().next().value);
  stopTyping(r, msg.user);
  if (msg.room === demo.current) renderMessages();
  else if (source === "live") (r.unread++, renderRooms());
}

function send(text) {
  const r = room(demo.current);
  const local = { id: `local-${++demo.seq}`, room: r.name, user: demo.user, text, ts: Date.now() / 1000 };
  r.pending.set(local.id, local);
  renderMessages();
  renderStatus();
  // Queued while offline and resent after a reconnect until the server acknowledges it.
  demo.wire.call("say", { room: r.name, text }).then(
    (msg) => (r.pending.delete(local.id), addMessage(msg, "sent")),
    (err) => {
      if (err.code === "duplicate") r.pending.delete(local.id); // handled already: it arrives as a message
      else local.failed = err.message;
      renderMessages();
    },
  ).finally(renderStatus);
  typingSent = 0;
  demo.wire.emit("typing", { room: r.name, typing: false }, { volatile: true });
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !demo.wire) return;
  $("text").value = "";
  send(text);
});

// ------------------------------------------------------------------------------------------------ typing and presence

let typingSent = 0;
$("text").addEventListener("input", () => {
  const now = Date.now();
  if (!$("text").value || now - typingSent < TYPING_EVERY) return;
  typingSent = now;
  demo.wire?.emit("typing", { room: demo.current, typing: true }, { volatile: true }); // dropped when offline
});

function onTyping({ room: name, user, typing }) {
  if (!demo.rooms.has(name) || user === demo.user) return;
  const r = room(name);
  stopTyping(r, user);
  if (typing) r.typing.set(user, setTimeout(() => stopTyping(r, user), TYPING_SHOWN));
  if (name === demo.current) renderTyping();
}

function stopTyping(r, user) {
  if (!r.typing.has(user)) return;
  clearTimeout(r.typing.get(user));
  r.typing.delete(user);
  if (r.name === demo.current) renderTyping();
}

function onPresence({ room: name, user, status, seq }) {
  if (!demo.rooms.has(name)) return;
  const r = room(name);
  // Events from two nodes may arrive out of order: apply one only if it is newer than the
  // listing and than the last event about the same user (docs/presence.md).
  if (seq != null) {
    if (seq <= r.presenceSeq || seq <= (r.latest.get(user)?.seq ?? -1)) return;
    r.latest.set(user, { seq, status });
  }
  if (status === "online") (r.members.add(user), r.gone.delete(user));
  else (r.members.delete(user), r.gone.add(user));
  if (name === demo.current) renderMembers();
}

// ------------------------------------------------------------------------------------------------ rendering

function pendingCount() {
  let n = 0;
  for (const r of demo.rooms.values()) for (const m of r.pending.values()) if (!m.failed) n++;
  return n;
}

function renderStatus() {
  const { state, info } = demo;
  const queued = pendingCount();
  const node = $("status");
  node.dataset.state = state;
  node.dataset.queued = String(queued);
  let label = STATES[state] ?? state;
  if (state === "offline" && info.delay != null) label += ` — retrying in ${Math.max(1, Math.round(info.delay / 1000))} s`;
  if (state === "closed" && info.error) label += `: ${info.error.message}`;
  if (queued) label += ` · ${queued} message${queued === 1 ? "" : "s"} queued`;
  node.querySelector(".label").textContent = label;
}

function renderRooms() {
  const items = [...demo.rooms.values()].map((r) => {
    const li = el("li", { className: r.name === demo.current ? "current" : "" }, el("span", { className: "name", textContent: r.name }));
    li.dataset.room = r.name;
    if (r.unread) li.append(el("span", { className: "unread", textContent: String(r.unread) }));
    if (demo.rooms.size > 1) {
      const leave = el("button", { className: "leave", type: "button", textContent: "×", title: `Leave #${r.name}` });
      leave.addEventListener("click", (event) => (event.stopPropagation(), leaveRoom(r.name)));
      li.append(leave);
    }
    li.addEventListener("click", () => select(r.name));
    return li;
  });
  $("rooms").replaceChildren(...items);
}

/** "AL" for "Ada Lovelace", "G" for "grace": the first letters of the first two words. */
function initials(name) {
  const words = name.trim().split(/[\s._-]+/).filter(Boolean);
  return words.slice(0, 2).map((w) => Array.from(w)[0]).join("").toUpperCase() || "?";
}

function colour(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `c${h % AVATAR_COLOURS}`;
}

/** An initials avatar: drawn by CSS from data-initials, so that it adds no text to the item it is in. */
function avatar(user) {
  const node = el("span", { className: `avatar ${colour(user)}`, title: user });
  node.dataset.initials = initials(user);
  node.setAttribute("aria-hidden", "true");
  return node;
}

/** The local calendar day of a time stamp, "2026-12-01". */
function dayOf(ts) {
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

function dayLabel(day) {
  const today = dayOf(Date.now() / 1000);
  if (day === today) return "Today";
  if (day === dayOf(Date.now() / 1000 - 86400)) return "Yesterday";
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d).toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", year: "numeric" });
}

function messageItem(m, pending, head) {
  const classes = ["msg", m.user === demo.user ? "mine" : "", pending ? (m.failed ? "failed" : "pending") : ""];
  const li = el("li", { className: classes.join(" ").trim(), title: m.failed ?? "" },
    avatar(m.user),
    el("span", { className: "who", textContent: m.user }),
    el("span", { className: "text", textContent: m.text }),
    el("time", { textContent: new Date(m.ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) }));
  Object.assign(li.dataset, { id: m.id, user: m.user, source: pending ? "pending" : m.source, day: dayOf(m.ts) });
  // The first message of a group shows its author; the next ones by the same author, that day, within
  // GROUP_GAP of the previous one, are drawn under it (a data attribute: the class list stays "msg [mine]").
  li.dataset.group = head ? "head" : "next";
  return li;
}

/** The room's messages with a separator for each day and grouped by author. */
function messageItems(messages) {
  const items = [];
  let prev = null;
  for (const { m, pending } of messages) {
    const day = dayOf(m.ts);
    if (!prev || dayOf(prev.ts) !== day) {
      const sep = el("li", { className: "day" }, el("span", { textContent: dayLabel(day) }));
      sep.dataset.day = day;
      sep.setAttribute("role", "separator");
      items.push(sep);
      prev = null;
    }
    const head = !prev || prev.user !== m.user || m.ts - prev.ts > GROUP_GAP;
    items.push(messageItem(m, pending, head));
    prev = m;
  }
  return items;
}

function renderMessages() {
  const r = room(demo.current);
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  const sent = [...r.messages.values()].sort((a, b) => a.ts - b.ts).map((m) => ({ m, pending: false }));
  const pending = [...r.pending.values()].map((m) => ({ m, pending: true }));
  list.replaceChildren(...messageItems([...sent, ...pending]));
  $("empty-room").textContent = `#${r.name}`;
  $("empty").hidden = sent.length + pending.length > 0;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function memberItem(user, status) {
  const face = avatar(user);
  face.append(el("span", { className: "dot" })); // on the avatar's corner
  const li = el("li", { className: user === demo.user ? "me" : "" }, face, user);
  Object.assign(li.dataset, { user, status });
  li.title = `${user}: ${status === "unknown" ? "last known online (this page is not connected)" : status}`;
  return li;
}

// Online members while this page is connected; when it is not, its own user is offline and the
// others' presence is unknown: their dots turn grey instead of staying green.
function renderMembers() {
  const r = room(demo.current);
  const connected = demo.state === "connected";
  const byName = (a, b) => a.localeCompare(b);
  const members = [...r.members].sort(byName);
  const gone = [...r.gone].filter((u) => !r.members.has(u)).sort(byName);
  $("people").dataset.stale = String(!connected);
  $("member-count").textContent = `(${members.length})`;
  $("members").replaceChildren(...members.map((user) =>
    memberItem(user, connected ? "online" : user === demo.user ? "offline" : "unknown")));
  $("offline-count").textContent = `(${gone.length})`;
  $("offline-title").hidden = gone.length === 0;
  $("offline").replaceChildren(...gone.map((user) => memberItem(user, "offline")));
}

function renderTyping() {
  const users = [...room(demo.current).typing.keys()].sort();
  let text = "";
  if (users.length === 1) text = `${users[0]} is typing…`;
  else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
  else if (users.length > 2) text = `${users.length} people are typing…`;
  $("typing").textContent = text;
}

let noticeTimer = null;
function notice(...parts) {
  const node = $("notice");
  node.replaceChildren(...parts);
  node.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (node.hidden = true), 8000);
}

// ------------------------------------------------------------------------------------------------ start

const remembered = sessionStorage.getItem("demo.name");
if (remembered) {
  fetchToken(remembered).then(({ token, user }) => start(user, token), () => sessionStorage.removeItem("demo.name"));
}
