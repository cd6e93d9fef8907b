// History and presence on topics: phoenix.js Presence and resume from the last position.
"use strict"
const test = require("node:test")
const assert = require("node:assert/strict")
const fs = require("node:fs")
const os = require("node:os")
const path = require("node:path")
const {Presence} = require("phoenix")
const {Server, connect, join, push, until, sleep} = require("./helpers")

function members(presence){ return presence.list((key, {metas}) => `${key}:${metas.length}`).sort() }

test("presence: new Presence(channel) lists who is here, across two workers", async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "chanlite-presence-"))
  const server = new Server("--workers", "2", "--layer", `sqlite:///${dir}/p.db`)
  await server.start()
  const sockets = []
  t.after(async () => { sockets.forEach(s => s.disconnect()); await server.stop(); fs.rmSync(dir, {recursive: true}) })
  const open = (user, transport = "websocket") => {
    const socket = connect(server, {transport, params: {user}})
    sockets.push(socket)
    const channel = socket.channel("chat:presence")
    const presence = new Presence(channel)
    let syncs = 0
    presence.onSync(() => syncs++)
    return {socket, channel, presence, syncs: () => syncs}
  }
  const ann = open("ann")
  await join(ann.channel)
  await until(() => members(ann.presence).join() === "ann:1", "ann to see herself")
  const bob = open("bob", "longpoll")
  await join(bob.channel)
  const bob2 = open("bob")
  await join(bob2.channel)
  for(const who of [ann, bob, bob2]){
    await until(() => members(who.presence).join() === "ann:1,bob:2", "everyone to see ann and bob twice")
  }
  bob2.socket.disconnect()
  await until(() => members(ann.presence).join() === "ann:1,bob:1", "bob's second tab to go")
  await new Promise(resolve => bob.channel.leave().receive("ok", resolve))
  await until(() => members(ann.presence).join() === "ann:1", "bob to go")
})

test("history: a rejoin resumes from the last ref, nothing lost or doubled while messages flow", async t => {
  const server = new Server()
  await server.start()
  const writer = connect(server, {params: {user: "writer"}})
  let since = null
  const reader = connect(server, {params: {user: "reader"}})
  t.after(async () => { writer.disconnect(); reader.disconnect(); await server.stop() })
  const out = writer.channel("chat:flow")
  await join(out)
  const seen = []
  const recoveries = []
  const inbox = reader.channel("chat:flow", () => since ? {since} : {})
  inbox.on("said", (msg, ref) => { seen.push(msg.n); since = ref })
  inbox.joinPush.receive("ok", reply => recoveries.push(reply.history))
  await join(inbox)
  const total = 300
  const sending = (async () => {
    for(let n = 0; n < total; n++){
      await push(out, "say", {n})
      if(n % 50 === 25){ await sleep(20) }
    }
  })()
  // Drop the reader's connection three times while the writer sends.
  for(let i = 0; i < 3; i++){
    await until(() => seen.length > (i + 1) * 40, "messages before a drop")
    reader.conn.close()  // as a network failure would: phoenix.js reconnects and rejoins
    await until(() => inbox.state === "joined" && recoveries.length === i + 2, "the rejoin")
  }
  await sending
  await until(() => seen.length >= total, "every message")
  await sleep(200)
  assert.deepEqual(seen, [...Array(total).keys()])
  assert.ok(recoveries.slice(1).every(h => h.recovered === true), JSON.stringify(recoveries))
})

test("history: resume across a server restart on the SQLite layer; a lost history says so", async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "chanlite-history-"))
  const server = new Server("--layer", `sqlite:///${dir}/h.db`)
  await server.start()
  let since = null
  const socket = connect(server, {params: {user: "eve"}})
  t.after(async () => { socket.disconnect(); await server.stop(); fs.rmSync(dir, {recursive: true}) })
  const seen = []
  const replies = []
  const room = socket.channel("chat:restart", () => since ? {since} : {last: 10})
  room.on("said", (msg, ref) => { seen.push(msg.n); since = ref })
  room.joinPush.receive("ok", reply => replies.push(reply.history))
  await join(room)
  for(let n = 0; n < 5; n++){ await push(room, "say", {n}) }
  await until(() => seen.length === 5, "the first five")
  await server.stop()
  // While it is down, another process on the same file adds to the topic's history.
  await server.start()
  const other = connect(server, {params: {user: "fay"}})
  t.after(() => other.disconnect())
  const otherRoom = other.channel("chat:restart")
  await join(otherRoom)
  for(let n = 5; n < 8; n++){ await push(otherRoom, "say", {n}) }
  await until(() => seen.length === 8, "the rejoin to replay what was missed", 20000)
  assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7])
  assert.equal(replies.at(-1).recovered, true)

  // A history that is gone (a new file) is said so, never passed off as complete.
  await server.stop()
  fs.rmSync(path.join(dir, "h.db"))
  await server.start()
  await until(() => replies.length >= 3, "the rejoin after the history was lost", 20000)
  assert.equal(replies.at(-1).recovered, false)
  assert.equal(replies.at(-1).reason, "epoch")
})
