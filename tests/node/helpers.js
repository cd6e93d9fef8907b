// Real `chanlite run` processes and the official phoenix client, for node --test.
"use strict"
const {spawn} = require("node:child_process")
const path = require("node:path")
const WebSocket = require("ws")
const {Socket, LongPoll} = require("phoenix")

const REPO = path.resolve(__dirname, "../..")
const CHANLITE = process.env.CHANLITE_BIN || path.join(REPO, ".venv/bin/chanlite")
const APP = process.env.CHANLITE_APP || "tests/topics/phoenix_app.py:app"
const BANNER = /^\s+(http:\/\/\S+?):(\d+)\s*$/m

class Server {
  constructor(...args){
    this.args = args
    this.proc = null
    this.port = 0
    this.output = ""
  }

  // Start (again, on the same port after the first time); resolves with the base URL.
  start(){
    return new Promise((resolve, reject) => {
      const args = ["run", APP, "--host", "127.0.0.1", "--port", String(this.port), ...this.args]
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CHANLITE_")))
      const proc = this.proc = spawn(CHANLITE, args, {cwd: REPO, env, detached: true, stdio: ["ignore", "pipe", "pipe"]})
      let log = ""
      const timer = setTimeout(() => reject(new Error(`chanlite did not start:\n${log}`)), 30000)
      const onData = chunk => {
        log += chunk
        this.output += chunk
        const found = BANNER.exec(log)
        if(found && !this.url){
          this.port = Number(found[2])
          this.url = `${found[1]}:${found[2]}`
        }
        if(found){
          clearTimeout(timer)
          proc.stdout.off("data", onData)
          proc.stderr.off("data", onData)
          const keep = c => { this.output += c }
          proc.stdout.on("data", keep)
          proc.stderr.on("data", keep)
          waitForHttp(`${found[1]}:${found[2]}`).then(() => resolve(this.url), reject)
        }
      }
      // The banner goes to stderr with the log lines.
      proc.stdout.on("data", onData)
      proc.stderr.on("data", onData)
      const echo = c => { if(process.env.CHANLITE_VERBOSE){ process.stderr.write(c) } }
      proc.stdout.on("data", echo)
      proc.stderr.on("data", echo)
      proc.on("exit", code => { clearTimeout(timer); if(!this.url){ reject(new Error(`chanlite exited ${code}:\n${log}`)) } })
    })
  }

  // SIGTERM the whole process group (workers included); resolves when it has exited.
  stop(){
    const proc = this.proc
    this.proc = null
    if(!proc || proc.exitCode !== null){ return Promise.resolve() }
    return new Promise(resolve => {
      proc.on("exit", () => resolve())
      process.kill(-proc.pid, "SIGTERM")
      setTimeout(() => { try { process.kill(-proc.pid, "SIGKILL") } catch { /* gone */ } }, 20000).unref()
    })
  }

  get wsUrl(){ return this.url.replace("http://", "ws://") + "/socket" }
}

async function waitForHttp(url){
  for(let i = 0; i < 300; i++){
    try { await fetch(url + "/"); return } catch { await sleep(50) }
  }
  throw new Error(`${url} did not answer`)
}

function sleep(ms){ return new Promise(resolve => setTimeout(resolve, ms)) }

// A connected phoenix Socket; transport "websocket" (the ws package) or "longpoll".
function connect(server, {transport = "websocket", params = {}, ...opts} = {}){
  const socket = new Socket(server.url + "/socket", {
    transport: transport === "longpoll" ? LongPoll : WebSocket,
    params,
    reconnectAfterMs: () => 100,
    rejoinAfterMs: () => 100,
    heartbeatIntervalMs: 5000,
    ...opts,
  })
  socket.connect()
  return socket
}

// Join *channel*; resolves with the ok response, rejects with the error one.
function join(channel){
  return new Promise((resolve, reject) => {
    channel.join()
      .receive("ok", resolve)
      .receive("error", reject)
      .receive("timeout", () => reject(new Error("join timed out")))
  })
}

// Push and resolve with {status, response} whatever the status ("timeout" included).
function push(channel, event, payload, timeout){
  return new Promise(resolve => {
    const p = channel.push(event, payload, timeout)
    for(const status of ["ok", "error", "timeout", "other"]){
      p.receive(status, response => resolve({status, response}))
    }
  })
}

// Resolve with the next *event* payload on *channel*.
function next(channel, event, timeoutMs = 10000){
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { channel.off(event, ref); reject(new Error(`no ${event} within ${timeoutMs} ms`)) }, timeoutMs)
    const ref = channel.on(event, payload => { clearTimeout(timer); channel.off(event, ref); resolve(payload) })
  })
}

// Resolve once predicate() is true (checked every 20 ms).
async function until(predicate, what, timeoutMs = 15000){
  const deadline = Date.now() + timeoutMs
  while(!predicate()){
    if(Date.now() > deadline){ throw new Error(`timed out waiting for ${what}`) }
    await sleep(20)
  }
}

module.exports = {Server, connect, join, push, next, until, sleep}
