// The official phoenix client (pinned in package.json) against `chanlite run`.
"use strict"
const test = require("node:test")
const assert = require("node:assert/strict")
const {Server, connect, join, push, next, until, sleep} = require("./helpers")

for(const transport of ["websocket", "longpoll"]){
  test(`${transport}: join, replies, broadcasts, leave`, async t => {
    const server = new Server()
    await server.start()
    const ann = connect(server, {transport, params: {user: "ann"}})
    const bob = connect(server, {transport, params: {user: "bob"}})
    t.after(() => { ann.disconnect(); bob.disconnect(); return server.stop() })

    const annRoom = ann.channel("room:lobby", {})
    const bobRoom = bob.channel("room:lobby", {})
    assert.deepEqual((await join(annRoom)).joined, "lobby")
    assert.equal((await join(bobRoom)).user, "bob")

    assert.deepEqual(await push(annRoom, "echo", {n: 1}), {status: "ok", response: {n: 1}})
    assert.deepEqual(await push(annRoom, "refuse", {}), {status: "error", response: {reason: "no"}})
    assert.deepEqual(await push(annRoom, "status", {status: "other"}), {status: "other", response: {given: "other"}})
    assert.deepEqual(await push(annRoom, "nope", {}), {status: "error", response: {reason: "unhandled event"}})

    // broadcast reaches both; broadcast_from everyone but the sender
    let got = [next(annRoom, "new_msg"), next(bobRoom, "new_msg")]
    await push(annRoom, "shout", {body: "hi"})
    for(const msg of await Promise.all(got)){ assert.deepEqual(msg, {body: "hi", from: "ann"}) }
    const annGot = []
    annRoom.on("new_msg", m => annGot.push(m))
    got = next(bobRoom, "new_msg")
    await push(annRoom, "shout_from", {body: "only bob"})
    assert.deepEqual(await got, {body: "only bob", from: "ann"})
    // ann's own copy would have come first: a round trip later, it has not
    await push(annRoom, "echo", {})
    assert.deepEqual(annGot, [])

    // a push from the server to its own client
    got = next(annRoom, "pushed")
    annRoom.push("push_me", {x: 1})  // no reply: the handler returns nothing
    assert.deepEqual(await got, {x: 1})

    // leave: ok, and broadcasts stop
    await new Promise(resolve => bobRoom.leave().receive("ok", resolve))
    assert.equal(bobRoom.state, "closed")
    got = next(annRoom, "new_msg")
    await push(annRoom, "shout", {body: "after"})
    await got
    await push(annRoom, "echo", {})
  })
}

test("websocket: refused joins, unmatched topics, refused connect", async t => {
  const server = new Server()
  await server.start()
  const socket = connect(server, {params: {user: "cy"}})
  t.after(() => { socket.disconnect(); return server.stop() })
  await assert.rejects(join(socket.channel("room:secret")), e => e.reason === "unauthorized")
  await assert.rejects(join(socket.channel("nowhere:1")), e => e.reason === "unmatched topic")
  await assert.rejects(join(socket.channel("room:boom", {crash: true})), e => e.reason === "join crashed")

  const refused = connect(server, {params: {token: "bad"}, reconnectAfterMs: () => 60000})
  t.after(() => refused.disconnect())
  let errors = 0
  refused.onError(() => errors++)
  await until(() => errors > 0, "the refused socket's error")
  assert.equal(refused.isConnected(), false)
})

test("websocket: reply timeouts, and a slow handler holds up no other topic", async t => {
  const server = new Server()
  await server.start()
  const socket = connect(server)
  t.after(() => { socket.disconnect(); return server.stop() })
  const a = socket.channel("room:a")
  const b = socket.channel("room:b")
  await join(a)
  await join(b)
  const slow = push(a, "slow", {ms: 1500}, 300)
  assert.deepEqual(await push(b, "echo", {fast: true}), {status: "ok", response: {fast: true}})
  assert.equal((await slow).status, "timeout")
  assert.deepEqual(await push(a, "slow", {ms: 10}, 5000), {status: "ok", response: {slept: 10}})
})

test("websocket: server close and crash of one topic; rejoin replaces", async t => {
  const server = new Server()
  await server.start()
  const socket = connect(server)
  t.after(() => { socket.disconnect(); return server.stop() })
  const kicked = socket.channel("room:k")
  await join(kicked)
  const closed = new Promise(resolve => kicked.onClose(resolve))
  push(kicked, "kick", {})
  await closed
  assert.equal(kicked.state, "closed")

  const crashing = socket.channel("room:c")
  await join(crashing)
  let errored = 0
  crashing.onError(() => errored++)
  push(crashing, "crash", {})
  await until(() => errored === 1, "phx_error")
  // phoenix.js rejoins an errored channel by itself
  await until(() => crashing.state === "joined", "the rejoin")
  assert.deepEqual(await push(crashing, "echo", {again: 1}), {status: "ok", response: {again: 1}})

  // a second channel object for the same topic replaces the first
  const second = socket.channel("room:c")
  await join(second)
  assert.equal(crashing.state, "closed")
  assert.deepEqual(await push(second, "echo", {}), {status: "ok", response: {}})
})

test("websocket: binary pushes and replies", async t => {
  const server = new Server()
  await server.start()
  const socket = connect(server)
  t.after(() => { socket.disconnect(); return server.stop() })
  const room = socket.channel("room:bin")
  await join(room)
  const data = new Uint8Array([1, 2, 3, 250]).buffer
  const {status, response} = await push(room, "binary", data)
  assert.equal(status, "ok")
  assert.deepEqual([...new Uint8Array(response)], [250, 3, 2, 1])
})

test("websocket: rejoin after the server restarts", async t => {
  const server = new Server()
  await server.start()
  const socket = connect(server, {params: {user: "dee"}})
  t.after(() => { socket.disconnect(); return server.stop() })
  const room = socket.channel("room:restart")
  const firstPid = (await join(room)).pid
  let joins = 0
  room.joinPush.receive("ok", () => joins++)
  await server.stop()
  await until(() => room.state !== "joined", "the channel to notice")
  await server.start()
  await until(() => room.state === "joined", "the rejoin", 20000)
  const {response} = await push(room, "whoami", {})
  assert.equal(response.user, "dee")
  assert.notEqual(response.pid, firstPid)
})

test("longpoll across two workers on the SQLite layer", async t => {
  const os = require("node:os")
  const fs = require("node:fs")
  const path = require("node:path")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "chanlite-lp-"))
  const server = new Server("--workers", "2", "--layer", `sqlite:///${dir}/lp.db`)
  await server.start()
  const clients = ["ann", "bob", "cy", "dee"].map(user => connect(server, {transport: "longpoll", params: {user}}))
  t.after(async () => { clients.forEach(c => c.disconnect()); await server.stop(); fs.rmSync(dir, {recursive: true}) })
  const rooms = clients.map(c => c.channel("room:lp"))
  const pids = new Set()
  for(const room of rooms){ pids.add((await join(room)).pid) }
  // Every request is its own HTTP exchange, landing on either worker; with 4 sessions
  // and dozens of requests both workers serve sessions and relay to each other.
  const got = rooms.map(() => [])
  rooms.forEach((room, i) => room.on("new_msg", m => got[i].push(m.n)))
  for(let n = 0; n < 20; n++){
    const sender = rooms[n % rooms.length]
    assert.deepEqual(await push(sender, "shout", {n}), {status: "ok", response: {}})
  }
  await until(() => got.every(g => g.length === 20), "every broadcast at every client")
  for(const g of got){ assert.deepEqual(g, [...Array(20).keys()]) }
  const whoami = await Promise.all(rooms.map(room => push(room, "whoami", {})))
  assert.deepEqual(whoami.map(w => w.response.user), ["ann", "bob", "cy", "dee"])
})
