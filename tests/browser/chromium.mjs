// What every Chromium driver here shares (hmr.mjs, private.mjs, bench/hmr_bench.mjs): launching
// Debian's Chromium through playwright-core, and small helpers. Imported by path, so bench/
// resolves playwright-core from tests/browser/node_modules through this file.

import { closeSync, ftruncateSync, openSync, writeSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
// Headless, as root, with no network of its own: without the background-networking flags
// Chromium keeps dialling Google's hosts, which this machine's closed network refuses.
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];
export const TOKEN_PARAM = "bl_preview_token";

// CHROMIUM_EXTRA_ARGS: more flags, space-separated (the HTTPS test trusts its test CA's
// certificate with --ignore-certificate-errors-spki-list).
const EXTRA_ARGS = (process.env.CHROMIUM_EXTRA_ARGS || "").split(/\s+/).filter(Boolean);

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...EXTRA_ARGS],
    timeout: 60000,
  });
}

/** `host:port` of a URL, lower-cased, with the scheme's default port made explicit. */
export function hostPort(raw) {
  const u = new URL(raw);
  const port = u.port || { "http:": "80", "https:": "443", "ws:": "80", "wss:": "443" }[u.protocol];
  return `${u.hostname.toLowerCase()}:${port}`;
}

/** A string for the evidence, cut to n characters; binary frames are described, not dumped. */
export function clip(value, n = 300) {
  const s =
    typeof value === "string" ? value : value instanceof Uint8Array ? `<binary ${value.length} bytes>` : String(value);
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

// Rewrites a file in place without truncating it first: writeFileSync truncates, and a dev
// server whose watcher fires in between reads an empty module (seen with Vite: the hot update
// rendered ""). For a same-length edit the file's size never changes, so a reader sees the old
// or the new text, never a torn one.
export function rewrite(file, text) {
  const fd = openSync(file, "r+");
  try {
    const bytes = Buffer.from(text, "utf8");
    writeSync(fd, bytes, 0, bytes.length, 0);
    ftruncateSync(fd, bytes.length);
  } finally {
    closeSync(fd);
  }
}

/** Polls `predicate` until it returns something truthy, at most `timeoutMs`. */
export async function waitUntil(predicate, timeoutMs, what, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// The driver's command loop, shared by both drivers: one JSON command a line on stdin, one JSON
// answer a line on stdout. "open" and "close" manage named sessions (new Session(browser, name));
// every other op goes to run(session, op, cmd). On a failure, evidence(session, cmd) says what
// the page did before it.
export async function serveSessions(Session, run, evidence) {
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
    const { id, op, session: name } = cmd;
    if (op === "quit") {
      write({ id, ok: true, result: {} });
      break;
    }
    let s = null;
    try {
      let result;
      if (op === "open") {
        if (sessions.has(name)) await sessions.get(name).close();
        s = new Session(browser, name);
        sessions.set(name, s);
        result = await s.open(cmd);
      } else {
        s = sessions.get(name);
        if (!s) throw new Error(`no session ${name}`);
        if (op === "close") {
          result = await s.close();
          sessions.delete(name);
        } else result = await run(s, op, cmd);
      }
      write({ id, ok: true, result });
    } catch (err) {
      const snapshot = s ? await Promise.resolve(evidence(s, cmd)).catch(() => null) : null;
      write({ id, ok: false, error: String(err.message || err), snapshot });
    }
  }
  lines.close();
  process.stdin.destroy();
  for (const s of sessions.values()) await s.close().catch(() => {});
  await browser.close();
}
