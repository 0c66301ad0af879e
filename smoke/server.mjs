// The smoke system's only program (stand-in for a real app; .github/workflows/smoke.yml, tools/probe.py).
//
//   node server.mjs web        HTTP on $PORT: /healthz, /metrics, /smoke (live checks), POST /webhooks/smoke
//   node server.mjs worker     writes a heartbeat to Redis every 10 s
//   node server.mjs singleton  the same under its own key, with the task that holds it
//   node server.mjs migrate    creates smoke_migrations and records row 1, over verified TLS; exits 0
//
// Node built-ins only (no npm install, no lockfile): Postgres and Redis are spoken directly, just
// enough for this test. Postgres: SSLRequest, then TLS verified against the CA file named by the URL's
// `sslrootcert` (what node-postgres does with the platform's DATABASE_URL), SCRAM-SHA-256 (RFC 7677;
// RDS's default password_encryption) or cleartext/md5, simple queries. Redis: TLS (rediss://, the
// ElastiCache certificate chains to a public CA in Node's store; NODE_EXTRA_CA_CERTS adds others), AUTH.
// Logs are JSON lines on stdout. Writes nothing outside /tmp (nothing at all, in fact).
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import tls from "node:tls";

const MODE = process.argv[2] ?? "web";
const SERVICE = process.env.OTEL_SERVICE_NAME ?? `smoke-${MODE}`;
const VERSION = process.env.SMOKE_VERSION ?? "1";
const HEARTBEAT_MS = Number(process.env.SMOKE_HEARTBEAT_MS ?? 10000);
const CONNECT_TIMEOUT_MS = Number(process.env.SMOKE_CONNECT_TIMEOUT_MS ?? 10000);

export function log(level, msg, fields = {}) {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level, service: SERVICE, mode: MODE, msg, ...fields })}\n`);
}

// ------------------------------------------------------------------ a byte stream read message by message

class Reader {
  constructor(socket) {
    this.buf = Buffer.alloc(0);
    this.waiters = [];
    this.error = null;
    this.attach(socket);
  }
  attach(socket) {
    socket.on("data", (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    socket.on("error", (e) => { this.error = e; this.wake(); });
    socket.on("close", () => { this.error ??= new Error("connection closed"); this.wake(); });
  }
  wake() { for (const w of this.waiters.splice(0)) w(); }
  async take(n) {
    while (this.buf.length < n) {
      if (this.error) throw this.error;
      await new Promise((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  async line() {
    for (;;) {
      const i = this.buf.indexOf("\r\n");
      if (i >= 0) { const out = this.buf.subarray(0, i).toString(); this.buf = this.buf.subarray(i + 2); return out; }
      if (this.error) throw this.error;
      await new Promise((r) => this.waiters.push(r));
    }
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([promise, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(timer));
}

function openSocket(host, port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

function upgrade(socket, host, ca) {
  return new Promise((resolve, reject) => {
    const options = { socket, ...(ca ? { ca } : {}) };
    if (!net.isIP(host)) options.servername = host; // SNI and the name checked against the certificate
    else options.checkServerIdentity = (_name, cert) => tls.checkServerIdentity(host, cert);
    const t = tls.connect(options, () => resolve(t)); // rejectUnauthorized defaults to true: verified or nothing
    t.once("error", reject);
  });
}

// ------------------------------------------------------------------ Postgres

export function scramClientProof(password, clientFirstBare, serverFirst, clientFinalWithoutProof) {
  const attrs = Object.fromEntries(serverFirst.split(",").map((kv) => [kv[0], kv.slice(2)]));
  const salted = crypto.pbkdf2Sync(password.normalize("NFKC"), Buffer.from(attrs.s, "base64"), Number(attrs.i), 32, "sha256");
  const hmac = (key, text) => crypto.createHmac("sha256", key).update(text).digest();
  const clientKey = hmac(salted, "Client Key");
  const storedKey = crypto.createHash("sha256").update(clientKey).digest();
  const authMessage = `${clientFirstBare},${serverFirst},${clientFinalWithoutProof}`;
  const signature = hmac(storedKey, authMessage);
  const proof = Buffer.from(clientKey.map((b, i) => b ^ signature[i])).toString("base64");
  const serverSignature = hmac(hmac(salted, "Server Key"), authMessage).toString("base64");
  return { proof, serverSignature, nonce: attrs.r };
}

function pgMessage(type, body) {
  const len = Buffer.alloc(4);
  len.writeInt32BE(body.length + 4);
  return Buffer.concat([type ? Buffer.from(type) : Buffer.alloc(0), len, body]);
}

const cstr = (s) => Buffer.from(`${s}\0`);

export class Postgres {
  static async connect(url) {
    const u = new URL(url);
    const q = u.searchParams;
    const host = u.hostname.replace(/^\[|\]$/g, "");
    const port = Number(u.port || 5432);
    const ca = q.get("sslrootcert") ? fs.readFileSync(q.get("sslrootcert")) : undefined; // ENOENT: no bundle, no connection
    const tlsWanted = (q.get("sslmode") ?? "prefer") !== "disable";
    let socket = await openSocket(host, port);
    if (tlsWanted) {
      const req = Buffer.alloc(8);
      req.writeInt32BE(8);
      req.writeInt32BE(80877103, 4);
      socket.write(req);
      const answer = await new Promise((resolve, reject) => { socket.once("data", resolve); socket.once("error", reject); });
      if (answer.toString() !== "S") throw new Error("the server refused TLS (sslmode requires it)");
      socket = await upgrade(socket, host, ca);
    }
    const pg = new Postgres(socket);
    await pg.startup(decodeURIComponent(u.username), decodeURIComponent(u.password), decodeURIComponent(u.pathname.slice(1)) || decodeURIComponent(u.username));
    return pg;
  }
  constructor(socket) {
    this.socket = socket;
    this.reader = new Reader(socket);
  }
  async next() {
    const head = await this.reader.take(5);
    const body = await this.reader.take(head.readInt32BE(1) - 4);
    return { type: String.fromCharCode(head[0]), body };
  }
  static error(body) {
    const fields = {};
    for (const part of body.toString().split("\0")) if (part) fields[part[0]] = part.slice(1);
    return new Error(`postgres: ${fields.S ?? "ERROR"} ${fields.C ?? ""} ${fields.M ?? "unknown error"}`);
  }
  async startup(user, password, database) {
    const params = Buffer.concat([cstr("user"), cstr(user), cstr("database"), cstr(database), cstr("application_name"), cstr(SERVICE), Buffer.from([0])]);
    const version = Buffer.alloc(4);
    version.writeInt32BE(196608);
    this.socket.write(pgMessage(null, Buffer.concat([version, params])));
    let scram;
    for (;;) {
      const { type, body } = await this.next();
      if (type === "E") throw Postgres.error(body);
      if (type === "Z") return;
      if (type !== "R") continue; // ParameterStatus, BackendKeyData, NoticeResponse
      const code = body.readInt32BE(0);
      if (code === 3) this.socket.write(pgMessage("p", cstr(password)));
      else if (code === 5) {
        const md5 = (s) => crypto.createHash("md5").update(s).digest("hex");
        this.socket.write(pgMessage("p", cstr(`md5${md5(Buffer.concat([Buffer.from(md5(password + user)), body.subarray(4, 8)]))}`)));
      } else if (code === 10) {
        if (!body.subarray(4).toString().split("\0").includes("SCRAM-SHA-256")) throw new Error("postgres offers no SCRAM-SHA-256");
        const nonce = crypto.randomBytes(18).toString("base64");
        scram = { bare: `n=*,r=${nonce}`, nonce };
        const first = Buffer.from(`n,,${scram.bare}`);
        const len = Buffer.alloc(4);
        len.writeInt32BE(first.length);
        this.socket.write(pgMessage("p", Buffer.concat([cstr("SCRAM-SHA-256"), len, first])));
      } else if (code === 11) {
        const serverFirst = body.subarray(4).toString();
        const withoutProof = `c=biws,r=${serverFirst.split(",").find((kv) => kv.startsWith("r=")).slice(2)}`;
        const r = scramClientProof(password, scram.bare, serverFirst, withoutProof);
        if (!r.nonce.startsWith(scram.nonce)) throw new Error("postgres SCRAM: server nonce does not extend ours");
        scram.serverSignature = r.serverSignature;
        this.socket.write(pgMessage("p", Buffer.from(`${withoutProof},p=${r.proof}`)));
      } else if (code === 12) {
        if (body.subarray(4).toString() !== `v=${scram.serverSignature}`) throw new Error("postgres SCRAM: wrong server signature");
      } else if (code !== 0) throw new Error(`postgres asks for authentication method ${code}, not supported here`);
    }
  }
  async query(sql) {
    this.socket.write(pgMessage("Q", cstr(sql)));
    const rows = [];
    let failure = null;
    for (;;) {
      const { type, body } = await this.next();
      if (type === "E") failure = Postgres.error(body);
      else if (type === "D") {
        const row = [];
        let at = 2;
        for (let i = 0; i < body.readInt16BE(0); i++) {
          const n = body.readInt32BE(at);
          at += 4;
          row.push(n < 0 ? null : body.subarray(at, at + n).toString());
          at += Math.max(n, 0);
        }
        rows.push(row);
      } else if (type === "Z") {
        if (failure) throw failure;
        return rows;
      }
    }
  }
  close() {
    try { this.socket.end(pgMessage("X", Buffer.alloc(0))); } catch { /* closing anyway */ }
  }
}

// ------------------------------------------------------------------ Redis

export class Redis {
  static async connect(url) {
    const u = new URL(url);
    const host = u.hostname.replace(/^\[|\]$/g, "");
    let socket = await openSocket(host, Number(u.port || 6379));
    if (u.protocol === "rediss:") socket = await upgrade(socket, host);
    const r = new Redis(socket);
    if (u.password) await r.command(...(u.username ? ["AUTH", decodeURIComponent(u.username)] : ["AUTH"]), decodeURIComponent(u.password));
    return r;
  }
  constructor(socket) {
    this.socket = socket;
    this.reader = new Reader(socket);
  }
  async reply() {
    const line = await this.reader.line();
    const kind = line[0];
    const rest = line.slice(1);
    if (kind === "+") return rest;
    if (kind === "-") throw new Error(`redis: ${rest}`);
    if (kind === ":") return Number(rest);
    if (kind === "$") {
      if (Number(rest) < 0) return null;
      const data = await this.reader.take(Number(rest) + 2);
      return data.subarray(0, -2).toString();
    }
    if (kind === "*") {
      const items = [];
      for (let i = 0; i < Number(rest); i++) items.push(await this.reply());
      return items;
    }
    throw new Error(`redis: unexpected reply ${JSON.stringify(line)}`);
  }
  async command(...args) {
    this.socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join("")}`);
    return this.reply();
  }
  close() {
    try { this.socket.end(); } catch { /* closing anyway */ }
  }
}

// ------------------------------------------------------------------ what each mode does

async function database() {
  const url = process.env.DATABASE_URL;
  if (!url) return null;
  try {
    return await withTimeout(Postgres.connect(url), CONNECT_TIMEOUT_MS, "postgres");
  } catch (err) {
    const u = new URL(url);
    log("error", "postgres unreachable", { host: u.hostname, port: Number(u.port || 5432), error: String(err.message ?? err) });
    process.exit(1);
  }
}

async function cache() {
  const url = process.env.REDIS_URL;
  if (!url) return null;
  try {
    return await withTimeout(Redis.connect(url), CONNECT_TIMEOUT_MS, "redis");
  } catch (err) {
    log("error", "redis unreachable", { host: new URL(url).hostname, error: String(err.message ?? err) });
    process.exit(1);
  }
}

const tlsQuery = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

async function migrate() {
  const db = await database();
  if (!db) { log("error", "DATABASE_URL is not set: nothing to migrate"); process.exit(1); }
  try {
    await db.query("SELECT pg_advisory_lock(7220)");
    await db.query("CREATE TABLE IF NOT EXISTS smoke_migrations (id integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), version text NOT NULL)");
    const version = VERSION.replace(/[^A-Za-z0-9:._-]/g, "");
    await db.query(`INSERT INTO smoke_migrations (id, version) VALUES (1, '${version}') ON CONFLICT (id) DO NOTHING`);
    const [[applied]] = await db.query("SELECT applied_at FROM smoke_migrations WHERE id = 1");
    const [[ssl]] = await db.query(tlsQuery);
    log("info", "migration applied", { table: "smoke_migrations", row: 1, applied_at: applied, tls: ssl === "t" });
    db.close();
    process.exit(0);
  } catch (err) {
    log("error", "migration failed", { error: String(err.message ?? err) });
    process.exit(1);
  }
}

function heartbeat(key) {
  return async () => {
    const [db, redis] = [await database(), await cache()];
    if (!redis) { log("error", "REDIS_URL is not set"); process.exit(1); }
    const beat = async () => {
      try {
        const now = new Date().toISOString();
        await redis.command("SET", `smoke:${key}:heartbeat`, now, "EX", "120");
        await redis.command("SET", `smoke:${key}:holder`, os.hostname(), "EX", "120");
        const ticks = await redis.command("INCR", `smoke:${key}:ticks`);
        if (db) await db.query("SELECT 1");
        log("info", "heartbeat", { key: `smoke:${key}:heartbeat`, ticks });
      } catch (err) {
        log("error", "heartbeat failed", { error: String(err.message ?? err) });
        process.exit(1);
      }
    };
    await beat();
    const timer = setInterval(beat, HEARTBEAT_MS);
    process.once("SIGTERM", () => { clearInterval(timer); log("info", "stopping on SIGTERM"); redis.close(); db?.close(); process.exit(0); });
  };
}

async function checks(db, redis) {
  const out = { version: VERSION };
  let ok = true;
  const generated = process.env.SMOKE_GENERATED ?? "";
  out.generated_secret_length = generated.length;
  const external = process.env.SMOKE_EXTERNAL ?? "";
  out.external_secret_sha256 = external ? crypto.createHash("sha256").update(external).digest("hex").slice(0, 16) : null;
  ok &&= generated.length > 0 && external.length > 0;
  try {
    const [[id, applied, ver]] = await db.query("SELECT id, applied_at, version FROM smoke_migrations WHERE id = 1");
    const [[ssl]] = await db.query(tlsQuery);
    out.migration = { id: Number(id), applied_at: applied, version: ver };
    out.postgres_tls = ssl === "t";
    ok &&= out.postgres_tls;
  } catch (err) {
    out.migration = null;
    out.postgres_error = String(err.message ?? err);
    ok = false;
  }
  try {
    const token = crypto.randomBytes(8).toString("hex");
    await redis.command("SET", "smoke:web:roundtrip", token, "EX", "60");
    out.redis_roundtrip = (await redis.command("GET", "smoke:web:roundtrip")) === token;
    ok &&= out.redis_roundtrip;
    for (const key of ["worker", "singleton"]) {
      const at = await redis.command("GET", `smoke:${key}:heartbeat`);
      out[`${key}_heartbeat_age_seconds`] = at ? Math.round((Date.now() - Date.parse(at)) / 1000) : null;
      out[`${key}_holder`] = await redis.command("GET", `smoke:${key}:holder`);
    }
  } catch (err) {
    out.redis_error = String(err.message ?? err);
    ok = false;
  }
  out.ok = ok;
  return out;
}

async function web() {
  const [db, redis] = [await database(), await cache()];
  if (!db) log("warn", "DATABASE_URL is not set: /smoke reports no database");
  if (!redis) log("warn", "REDIS_URL is not set: /smoke reports no cache");
  const started = Date.now();
  const counts = new Map();
  const health = process.env.SMOKE_HEALTH_PATH ?? "/healthz";
  const webhook = process.env.SMOKE_WEBHOOK_PATH ?? "/webhooks/smoke";
  const send = (res, status, body, type = "application/json") => {
    res.writeHead(status, { "content-type": type });
    res.end(type === "application/json" ? `${JSON.stringify(body)}\n` : body);
  };
  let busy = Promise.resolve(); // one query at a time on the one connection of each store
  const server = http.createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    if (req.method === "GET" && path === health) return send(res, 200, { status: "ok", version: VERSION });
    if (req.method === "GET" && path === "/metrics") {
      const lines = [
        "# TYPE smoke_up gauge", "smoke_up 1",
        "# TYPE smoke_uptime_seconds gauge", `smoke_uptime_seconds ${((Date.now() - started) / 1000).toFixed(1)}`,
        "# TYPE smoke_http_requests_total counter",
        ...[...counts].map(([p, n]) => `smoke_http_requests_total{path=${JSON.stringify(p.slice(0, 64))}} ${n}`),
      ];
      return send(res, 200, `${lines.join("\n")}\n`, "text/plain; version=0.0.4");
    }
    if (req.method === "GET" && path === "/smoke") {
      if (!db || !redis) return send(res, 503, { ok: false, error: "DATABASE_URL or REDIS_URL is not set" });
      busy = busy.then(() => withTimeout(checks(db, redis), CONNECT_TIMEOUT_MS, "checks"))
        .then((out) => { log(out.ok ? "info" : "error", "smoke checks", out); send(res, out.ok ? 200 : 503, out); })
        .catch((err) => { log("error", "smoke checks failed", { error: String(err.message ?? err) }); send(res, 503, { ok: false, error: String(err.message ?? err) }); });
      return undefined;
    }
    if (req.method === "POST" && path === webhook) {
      let size = 0;
      req.on("data", (d) => { size += d.length; });
      req.on("end", () => { log("info", "webhook received", { bytes: size, user_agent: req.headers["user-agent"] ?? null }); send(res, 200, { received: size }); });
      return undefined;
    }
    return send(res, 404, { error: "not found" });
  });
  server.keepAliveTimeout = Number(process.env.KEEP_ALIVE_TIMEOUT ?? 65000);
  server.headersTimeout = server.keepAliveTimeout + 1000;
  const port = Number(process.env.PORT ?? 8080);
  server.listen(port, () => log("info", "listening", { port, health }));
  process.once("SIGTERM", () => {
    log("info", "stopping on SIGTERM");
    server.close(() => { db?.close(); redis?.close(); process.exit(0); });
    setTimeout(() => process.exit(0), 8000).unref();
  });
}

const modes = { web, worker: heartbeat("worker"), singleton: heartbeat("singleton"), migrate };
if (import.meta.url === `file://${process.argv[1]}`) {
  if (!modes[MODE]) {
    log("error", `unknown mode ${MODE}; one of ${Object.keys(modes).join(", ")}`);
    process.exit(2);
  }
  process.on("unhandledRejection", (err) => { log("error", "unhandled", { error: String(err?.message ?? err) }); process.exit(1); });
  modes[MODE]();
}
