#!/usr/bin/env node
// Drives Debian's Chromium (playwright-core) through one hot-reload check, or serves many.
//
// One shot (prints one JSON object on stdout, exit status 0 when the check passed):
//   node hmr.mjs --url http://<id>.local.preview.localhost:<edge>/ --file apps/vite/message.js \
//       [--token T] [--from v1] [--to v2] [--selector '#message'] [--timeout-ms 60000]
//       [--ready-frame REGEX] [--ready-sent REGEX]
//   The file is restored afterwards.
//
// Server (what the pytest suite uses, so one browser serves every test):
//   node hmr.mjs --serve
//   stdin:  one JSON command a line  {"id": 1, "op": "open", ...}
//   stdout: one JSON reply a line    {"id": 1, "ok": true, "result": {...}} or {"ok": false, "error"}
//   The first line is {"ready": true, "version": "<chromium version>"}.
//
// Commands (each names a `session`: one browser context with one page):
//   open    {session, url, token?, selector, expect, timeoutMs, gateway?, readyFrame?,
//            readySent?, requireGateway?}
//             opens url (url?bl_preview_token=token when a token is given), waits until the
//             selector shows `expect` and an HMR WebSocket through the gateway is ready (it
//             received a frame matching readyFrame, after sending one matching readySent),
//             then sets window.__hmrMarker
//   edit    {session, file, from, to, timeoutMs}
//             replaces `from` by `to` in file (in place, never truncated to empty first),
//             waits until the selector shows `to`
//   reconnect {session, sinceSocket, timeoutMs}
//             waits for a new ready HMR WebSocket through the gateway (index >= sinceSocket)
//             and for the selector; reports whether the page reloaded, then sets a new marker
//   snapshot {session}   close {session}   quit {}
//
// Every result carries the evidence: each WebSocket the page opened (URL, through the gateway or
// not, frames, errors), each main-frame navigation, requests that went anywhere but the gateway,
// token leaks, console lines. `violations` lists what breaks the rules whatever the command:
// a WebSocket or request that bypassed the gateway, a token still in the address bar or sent on.
// Sockets and requests of workers (Vite's vite-ping SharedWorker) are not seen.

import { readFileSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import {
  clip,
  hostPort,
  launch,
  rewrite,
  serveSessions,
  TOKEN_PARAM,
  waitUntil,
} from "./chromium.mjs";

function now() {
  return Date.now();
}

class Session {
  constructor(browser, name) {
    this.browser = browser;
    this.name = name;
    this.sockets = [];
    this.navigations = [];
    this.offGateway = [];
    this.tokenLeaks = [];
    this.console = [];
    this.pageErrors = [];
    this.marker = null;
    this.markedAtNavigation = 0;
    this.reloads = [];
  }

  async open({
    url,
    token,
    selector = "#message",
    expect,
    timeoutMs = 60000,
    gateway,
    readyFrame,
    readySent,
    requireGateway = true,
  }) {
    this.url = url;
    // When given, the ready frame only counts after the client sent a frame matching readySent
    // (Next: its `turbopack-subscribe` messages, answered by `built`).
    this.readySent = readySent ? new RegExp(readySent) : null;
    // false only for the suite's negative control, which expects a socket around the proxy.
    this.requireGateway = requireGateway;
    this.readyFrame = readyFrame ? new RegExp(readyFrame) : null;
    this.token = token || null;
    this.selector = selector;
    this.gateway = (gateway || hostPort(url)).toLowerCase();
    this.context = await this.browser.newContext({ viewport: { width: 800, height: 600 } });
    const page = (this.page = await this.context.newPage());
    this.t0 = now();
    page.on("websocket", (ws) => this.#onSocket(ws));
    // A navigation is a new document for the main frame, seen as its document request.
    // framenavigated would also count same-document history changes: Next's router calls
    // history.replaceState after hydration, at a moment that may fall inside an edit.
    page.on("request", (req) => {
      if (req.isNavigationRequest() && req.frame() === page.mainFrame()) {
        this.navigations.push({ url: req.url(), at: now() - this.t0 });
      }
    });
    page.on("request", (req) => this.#onRequest(req.url()));
    page.on("console", (msg) => {
      if (this.console.length < 200) this.console.push(`${msg.type()}: ${clip(msg.text(), 400)}`);
    });
    page.on("pageerror", (err) => this.pageErrors.push(clip(String(err), 400)));

    const target = new URL(url);
    if (this.token) target.searchParams.set(TOKEN_PARAM, this.token);
    const response = await page.goto(target.href, { waitUntil: "load", timeout: timeoutMs });
    // The redirect chain of the first navigation, oldest first: [{url, status}].
    const chain = [];
    if (response) {
      for (let req = response.request(); req; req = req.redirectedFrom()) {
        const res = await req.response();
        chain.unshift({ url: req.url(), status: res ? res.status() : null });
      }
    }
    this.firstNavigation = { chain, finalUrl: page.url() };
    await this.#waitForText(expect, timeoutMs);
    await this.#waitForHmrSocket(0, timeoutMs);
    await this.mark();
    const cookies = await this.context.cookies();
    this.cookies = cookies.map((c) => ({
      name: c.name,
      domain: c.domain,
      path: c.path,
      httpOnly: c.httpOnly,
      secure: c.secure,
      sameSite: c.sameSite,
      session: c.expires === -1,
    }));
    return this.snapshot();
  }

  async edit({ file, from, to, timeoutMs = 60000 }) {
    const before = readFileSync(file, "utf8");
    const count = before.split(from).length - 1;
    if (count !== 1) throw new Error(`${file} contains ${JSON.stringify(from)} ${count} times, not once`);
    const socketsBefore = this.sockets.length;
    const navigationsBefore = this.navigations.length;
    rewrite(file, before.replace(from, to));
    let shown = true;
    let error = null;
    try {
      await this.#waitForText(to, timeoutMs);
    } catch (err) {
      shown = false;
      error = String(err.message || err);
    }
    const marker = await this.#readMarker();
    return {
      ...this.snapshot(),
      edit: {
        file,
        from,
        to,
        shown,
        error,
        text: await this.#text(),
        markerKept: marker === this.marker,
        navigationsDuringEdit: this.navigations.slice(navigationsBefore),
        socketsOpenedDuringEdit: this.sockets.length - socketsBefore,
      },
    };
  }

  async reconnect({ sinceSocket, timeoutMs = 60000 }) {
    const markerBefore = this.marker;
    await this.#waitForHmrSocket(sinceSocket, timeoutMs);
    // A reload (Vite's answer to a lost socket) replaces the document: wait for the app again.
    await this.page.waitForSelector(this.selector, { timeout: timeoutMs });
    await this.page.waitForLoadState("load", { timeout: timeoutMs });
    const marker = await this.#readMarker();
    const reloaded = marker !== markerBefore;
    if (reloaded) this.reloads.push({ at: now() - this.t0 });
    await this.mark();
    return { ...this.snapshot(), reconnect: { reloaded, text: await this.#text() } };
  }

  async mark() {
    this.marker = randomBytes(8).toString("hex");
    await this.page.evaluate((m) => {
      window.__hmrMarker = m;
    }, this.marker);
    this.markedAtNavigation = this.navigations.length;
  }

  snapshot() {
    const violations = [];
    for (const s of this.sockets) {
      if (!s.viaGateway) violations.push(`WebSocket bypassed the gateway: ${s.url}`);
    }
    for (const u of this.offGateway) violations.push(`request bypassed the gateway: ${u}`);
    for (const u of this.tokenLeaks) violations.push(`preview token sent on: ${u}`);
    if (this.token && this.page && new URL(this.page.url()).searchParams.has(TOKEN_PARAM)) {
      violations.push(`token still in the address bar: ${this.page.url()}`);
    }
    return {
      session: this.name,
      gateway: this.gateway,
      url: this.page ? this.page.url() : null,
      firstNavigation: this.firstNavigation || null,
      cookies: this.cookies || [],
      sockets: this.sockets.map(({ frames, ...s }) => ({ ...s, framesIn: s.framesIn.length })),
      navigations: this.navigations,
      navigationsSinceMark: this.navigations.slice(this.markedAtNavigation),
      reloads: this.reloads,
      console: this.console.slice(-60),
      pageErrors: this.pageErrors,
      violations,
    };
  }

  async close() {
    const result = this.snapshot();
    if (this.context) await this.context.close();
    this.context = null;
    return result;
  }

  #onSocket(ws) {
    const url = ws.url();
    const rec = {
      index: this.sockets.length,
      url,
      hostPort: hostPort(url),
      viaGateway: hostPort(url) === this.gateway,
      createdAt: now() - this.t0,
      framesIn: [],
      framesOut: 0,
      log: [], // the first frames both ways: [ms since open, "in" | "out", payload]
      frames: [], // every frame both ways (clipped): ["in" | "out", payload]
      closedAt: null,
      error: null,
    };
    this.sockets.push(rec);
    if (this.token && url.includes(this.token)) this.tokenLeaks.push(url);
    ws.on("framereceived", (f) => {
      if (rec.framesIn.length < 1000) rec.framesIn.push(clip(f.payload, 200));
      if (rec.frames.length < 2000) rec.frames.push(["in", clip(f.payload, 200)]);
      if (rec.log.length < 40) rec.log.push([now() - this.t0, "in", clip(f.payload, 160)]);
    });
    ws.on("framesent", (f) => {
      rec.framesOut += 1;
      if (rec.frames.length < 2000) rec.frames.push(["out", clip(f.payload, 200)]);
      if (rec.log.length < 40) rec.log.push([now() - this.t0, "out", clip(f.payload, 160)]);
    });
    ws.on("socketerror", (err) => {
      rec.error = clip(String(err), 300);
    });
    ws.on("close", () => {
      rec.closedAt = now() - this.t0;
    });
  }

  #onRequest(raw) {
    let u;
    try {
      u = new URL(raw);
    } catch {
      return;
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") return;
    if (hostPort(raw) !== this.gateway) this.offGateway.push(raw);
    // The first request carries the token by design; nothing after it may.
    this.requests = (this.requests || 0) + 1;
    if (this.token && this.requests > 1 && raw.includes(this.token)) this.tokenLeaks.push(raw);
  }

  async #text() {
    try {
      return await this.page.evaluate((sel) => document.querySelector(sel)?.textContent ?? null, this.selector);
    } catch (err) {
      return `<unreadable: ${clip(String(err.message || err), 120)}>`;
    }
  }

  async #readMarker() {
    try {
      return await this.page.evaluate(() => window.__hmrMarker ?? null);
    } catch {
      return null;
    }
  }

  async #waitForText(value, timeoutMs) {
    await this.page.waitForFunction(
      ([sel, v]) => document.querySelector(sel)?.textContent === v,
      [this.selector, value],
      { timeout: timeoutMs, polling: 50 },
    );
  }

  // An HMR socket is up when a WebSocket through the gateway, opened at or after `since`, is
  // still open and has delivered a frame matching `readyFrame` (any frame without one), after a
  // sent frame matching `readySent` when that is given: each server greets or answers its
  // client at once. (Vite's reconnect probe, subprotocol vite-ping, runs in a SharedWorker:
  // page.on("websocket") does not see it at all.)
  #ready(s) {
    let sent = !this.readySent;
    for (const [dir, payload] of s.frames) {
      if (dir === "out" && this.readySent && this.readySent.test(payload)) sent = true;
      if (dir === "in" && sent && (!this.readyFrame || this.readyFrame.test(payload))) return true;
    }
    return false;
  }

  async #waitForHmrSocket(since, timeoutMs) {
    const ready = (s) =>
      s.index >= since &&
      (s.viaGateway || !this.requireGateway) &&
      s.closedAt === null &&
      this.#ready(s);
    await waitUntil(
      () => this.sockets.some(ready),
      timeoutMs,
      `an HMR WebSocket through the gateway to deliver a frame${this.readyFrame ? ` matching ${this.readyFrame}` : ""}`,
    );
  }
}

// ── one shot ────────────────────────────────────────────────────────────────────────────────
function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (key === "serve") out.serve = true;
    else out[key] = argv[++i];
  }
  return out;
}

async function oneShot(args) {
  if (!args.url || !args.file) throw new Error("--url and --file are required");
  const timeoutMs = Number(args.timeoutMs || 60000);
  const from = args.from || "v1";
  const to = args.to || "v2";
  const original = readFileSync(args.file, "utf8");
  const browser = await launch();
  const session = new Session(browser, "cli");
  let result;
  try {
    await session.open({
      url: args.url,
      token: args.token,
      selector: args.selector,
      expect: from,
      timeoutMs,
      readyFrame: args.readyFrame,
      readySent: args.readySent,
    });
    result = await session.edit({ file: args.file, from, to, timeoutMs });
  } catch (err) {
    result = { ...session.snapshot(), error: String(err.message || err) };
  } finally {
    await session.close().catch(() => {});
    await browser.close();
    writeFileSync(args.file, original);
  }
  const passed =
    !result.error &&
    result.edit?.shown &&
    result.edit.markerKept &&
    result.edit.navigationsDuringEdit.length === 0 &&
    result.violations.length === 0;
  result.passed = Boolean(passed);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return passed ? 0 : 1;
}

// ── server ──────────────────────────────────────────────────────────────────────────────────
function serve() {
  return serveSessions(Session, (s, op, cmd) => {
    if (op === "edit") return s.edit(cmd);
    if (op === "reconnect") return s.reconnect(cmd);
    if (op === "snapshot") return s.snapshot();
    throw new Error(`unknown op ${op}`);
  }, async (s) => s.snapshot());
}

const args = parseArgs(process.argv.slice(2));
if (args.serve) {
  await serve();
  process.exit(0);
} else {
  process.exitCode = await oneShot(args);
}
