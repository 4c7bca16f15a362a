#!/usr/bin/env node
// Browser side of the HMR benchmark (bench/hmr.py): Debian's Chromium driven by playwright-core,
// the same approach as tests/browser/hmr.mjs, but it measures instead of checking.
//
//   node bench/hmr_bench.mjs           (started by bench/hmr.py; nothing else uses it)
//   stdin:  one JSON command a line  {"id": 1, "op": "load", ...}
//   stdout: one JSON reply a line    {"id": 1, "ok": true, "result": {...}} or {"ok": false, "error"}
//   The first line is {"ready": true, "version": "<chromium version>"}.
//
// playwright-core is loaded from the browser suite's node_modules (tests/browser/node_modules,
// made by tests/browser/setup.sh), or from $HMR_BROWSER_DIR/node_modules.
//
// Commands:
//   load  {url, expect, gateway, readyFrame?, readySent?, timeoutMs}
//           one cold load: a new browser context (empty cache, no cookies), page.goto(url) until
//           `load`, until #message shows `expect`, and until the HMR WebSocket is ready; then
//           the context is closed. Times are in ms from just before page.goto.
//   open  {session, url, expect, gateway, readyFrame?, readySent?, timeoutMs}
//           the same, but the page stays open for edits; sets window.__hmrMarker
//   edit  {session, file, from, to, timeoutMs}
//           rewrites the file in place (never truncated to empty first) and reports the ms from
//           just before the write to the DOM mutation that made #message show `to`
//   close {session}   quit {}
//
// Clocks: "before the write" and "before page.goto" are Date.now() here; "the DOM showed it" is
// Date.now() in the page, stamped by a MutationObserver installed before any page script. Both
// read the host's CLOCK_REALTIME at 1 ms resolution; every result carries `clockSkewMs`, the
// page's Date.now() minus the midpoint of this process's readings around it (0 ± 1 expected).

import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const BROWSER_DIR = process.env.HMR_BROWSER_DIR || resolve(here, "..", "tests", "browser");
// The browser suite's helpers, which also resolve playwright-core from its node_modules.
const { clip, hostPort, launch, rewrite, waitUntil } = await import(
  pathToFileURL(join(BROWSER_DIR, "chromium.mjs")).href
);

const SELECTOR_ID = "message";

// Runs in the page before any of its scripts: stamps every change of #message's text and the
// load event with the page's Date.now().
function observe(id) {
  const st = { changes: [], loadAt: null };
  window.__pgwBench = st;
  let last;
  const check = () => {
    const el = document.getElementById(id);
    const text = el ? el.textContent : null;
    if (text !== last) {
      last = text;
      st.changes.push([text, Date.now()]);
    }
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true, characterData: true });
  addEventListener("load", () => {
    st.loadAt = Date.now();
    check();
  });
}

class Session {
  constructor(browser) {
    this.browser = browser;
    this.sockets = [];
    this.navigations = [];
    this.offTarget = [];
    this.requests = 0;
    this.pageErrors = [];
  }

  // Opens url in a fresh context and waits for `load`, the expected text and the HMR socket.
  async open({ url, expect, gateway, readyFrame, readySent, timeoutMs = 60000 }) {
    this.target = (gateway || hostPort(url)).toLowerCase();
    this.readyFrame = readyFrame ? new RegExp(readyFrame) : null;
    this.readySent = readySent ? new RegExp(readySent) : null;
    this.context = await this.browser.newContext({ viewport: { width: 800, height: 600 } });
    await this.context.addInitScript(observe, SELECTOR_ID);
    const page = (this.page = await this.context.newPage());
    page.on("websocket", (ws) => this.#onSocket(ws));
    page.on("framenavigated", (frame) => {
      if (frame === page.mainFrame()) this.navigations.push(frame.url());
    });
    page.on("request", (req) => {
      const u = req.url();
      if (!/^https?:/.test(u)) return;
      this.requests += 1;
      if (hostPort(u) !== this.target && this.offTarget.length < 20) this.offTarget.push(u);
    });
    page.on("pageerror", (err) => {
      if (this.pageErrors.length < 20) this.pageErrors.push(clip(String(err), 300));
    });

    const t0 = (this.t0 = Date.now());
    const response = await page.goto(url, { waitUntil: "load", timeout: timeoutMs });
    const gotoReturned = Date.now();
    const rendered = await this.#waitForChange(expect, 0, timeoutMs);
    const st = await page.evaluate(() => window.__pgwBench);
    const socketReady = await this.#waitForHmrSocket(timeoutMs);
    // Where the time went, in ms from the navigation's start (page clock): the document and
    // each subresource (connect = a new connection's set-up, 0 on a reused one).
    const { nav, resources } = await page.evaluate(() => {
      const r = (x) => Math.round(x * 10) / 10;
      const entry = (e) => ({
        path: new URL(e.name).pathname.slice(0, 80),
        start: r(e.startTime),
        connect: r(e.connectEnd - e.connectStart),
        ttfb: r(e.responseStart - e.startTime),
        end: r(e.responseEnd),
        bytes: e.transferSize,
      });
      const n = performance.getEntriesByType("navigation")[0];
      return {
        nav: n
          ? { ...entry(n), domContentLoaded: r(n.domContentLoadedEventEnd), loadEventEnd: r(n.loadEventEnd) }
          : null,
        resources: performance.getEntriesByType("resource").slice(0, 40).map(entry),
      };
    });
    this.marker = randomBytes(8).toString("hex");
    await page.evaluate((m) => {
      window.__hmrMarker = m;
    }, this.marker);
    return {
      status: response ? response.status() : null,
      loadMs: st.loadAt - t0,
      renderMs: rendered - t0,
      readyMs: Math.max(st.loadAt, rendered) - t0,
      gotoMs: gotoReturned - t0,
      socketMs: socketReady - t0,
      nav,
      resources,
      clockSkewMs: await this.#clockSkew(),
      ...this.summary(),
    };
  }

  async edit({ file, from, to, timeoutMs = 30000 }) {
    const before = readFileSync(file, "utf8");
    const count = before.split(from).length - 1;
    if (count !== 1) throw new Error(`${file} contains ${JSON.stringify(from)} ${count} times, not once`);
    const socketsBefore = this.sockets.length;
    const navigationsBefore = this.navigations.length;
    const seen = (await this.page.evaluate(() => window.__pgwBench.changes.length)) || 0;
    const after = before.replace(from, to);
    const t0 = Date.now();
    rewrite(file, after);
    const written = Date.now();
    const shownAt = await this.#waitForChange(to, seen, timeoutMs);
    const noticed = Date.now();
    const marker = await this.page.evaluate(() => window.__hmrMarker ?? null).catch(() => null);
    return {
      ms: shownAt - t0,
      writeMs: written - t0,
      noticedMs: noticed - t0,
      markerKept: marker === this.marker,
      navigations: this.navigations.slice(navigationsBefore),
      socketsOpened: this.sockets.length - socketsBefore,
      clockSkewMs: await this.#clockSkew(),
      ...this.summary(),
    };
  }

  summary() {
    return {
      target: this.target,
      sockets: this.sockets.map((s) => ({
        url: s.url,
        viaTarget: s.viaTarget,
        framesIn: s.framesIn,
        closed: s.closed,
        error: s.error,
      })),
      offTarget: this.offTarget,
      requests: this.requests,
      pageErrors: this.pageErrors,
    };
  }

  async close() {
    if (this.context) await this.context.close().catch(() => {});
    this.context = null;
  }

  // Page Date.now() minus the midpoint of ours around it.
  async #clockSkew() {
    const a = Date.now();
    const b = await this.page.evaluate(() => Date.now());
    const c = Date.now();
    return { skew: b - (a + c) / 2, span: c - a };
  }

  // The page time of the first change of #message to `value` at index >= since of the page's
  // change log (the log is per document: a reload would start it afresh, and is reported).
  async #waitForChange(value, since, timeoutMs) {
    const handle = await this.page.waitForFunction(
      ([v, since]) => {
        const st = window.__pgwBench;
        if (!st) return false;
        for (let i = since; i < st.changes.length; i++) {
          if (st.changes[i][0] === v) return st.changes[i][1];
        }
        return false;
      },
      [value, since],
      { timeout: timeoutMs, polling: 10 },
    );
    return handle.jsonValue();
  }

  #onSocket(ws) {
    const rec = {
      url: ws.url(),
      viaTarget: hostPort(ws.url()) === this.target,
      framesIn: 0,
      frames: [],
      readyAt: null,
      sentOk: !this.readySent,
      closed: false,
      error: null,
    };
    this.sockets.push(rec);
    ws.on("framesent", (f) => {
      if (this.readySent && this.readySent.test(typeof f.payload === "string" ? f.payload : "")) rec.sentOk = true;
    });
    ws.on("framereceived", (f) => {
      rec.framesIn += 1;
      const text = typeof f.payload === "string" ? f.payload : "";
      if (rec.readyAt === null && rec.sentOk && (!this.readyFrame || this.readyFrame.test(text))) {
        rec.readyAt = Date.now();
      }
    });
    ws.on("socketerror", (err) => {
      rec.error = clip(String(err), 200);
    });
    ws.on("close", () => {
      rec.closed = true;
    });
  }

  // The HMR socket is ready once a socket to the target received the server's greeting or
  // answer (see KINDS in bench/hmr.py); returns when (our clock) that frame arrived.
  async #waitForHmrSocket(timeoutMs) {
    const s = await waitUntil(
      () => this.sockets.find((s) => s.viaTarget && !s.closed && s.readyAt !== null),
      timeoutMs,
      `an HMR WebSocket to ${this.target} to deliver a frame${this.readyFrame ? ` matching ${this.readyFrame}` : ""}`,
      10,
    );
    return s.readyAt;
  }
}

async function main() {
  const browser = await launch();
  const sessions = new Map();
  const write = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
  write({ ready: true, version: browser.version() });
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      write({ id: null, ok: false, error: `bad JSON: ${err.message}` });
      continue;
    }
    const { id, op } = cmd;
    let s = null;
    try {
      let result;
      if (op === "quit") {
        write({ id, ok: true, result: {} });
        break;
      } else if (op === "load") {
        s = new Session(browser);
        try {
          result = await s.open(cmd);
        } finally {
          await s.close();
        }
      } else if (op === "open") {
        if (sessions.has(cmd.session)) await sessions.get(cmd.session).close();
        s = new Session(browser);
        sessions.set(cmd.session, s);
        result = await s.open(cmd);
      } else if (op === "edit") {
        s = sessions.get(cmd.session);
        if (!s) throw new Error(`no session ${cmd.session}`);
        result = await s.edit(cmd);
      } else if (op === "close") {
        const closing = sessions.get(cmd.session);
        sessions.delete(cmd.session);
        result = closing ? closing.summary() : {};
        if (closing) await closing.close();
      } else throw new Error(`unknown op ${op}`);
      write({ id, ok: true, result });
    } catch (err) {
      write({ id, ok: false, error: String(err.message || err), evidence: s ? s.summary() : null });
    }
  }
  lines.close();
  process.stdin.destroy();
  for (const s of sessions.values()) await s.close();
  await browser.close();
}

await main();
process.exit(0);
