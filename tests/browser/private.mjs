#!/usr/bin/env node
// Drives Debian's Chromium (playwright-core) for the private-preview browser tests
// (test_private_browser.py). Same wire protocol as hmr.mjs --serve, so tests/browser/conftest.py's
// Driver speaks to it:
//
//   node private.mjs --serve
//   stdin:  one JSON command a line  {"id": 1, "op": "open", ...}
//   stdout: one JSON reply a line    {"id": 1, "ok": true, "result": {...}}
//                                    or {"id": 1, "ok": false, "error": "...", "snapshot": {...}}
//   The first line is {"ready": true, "version": "<chromium version>"}.
//
// Commands (each names a `session`: one fresh browser context with one page):
//   open     {session, url, token?, ready?, probe?, timeoutMs}
//              opens url (with ?bl_preview_token=token when a token is given) in a new context,
//              waits for the load event and then, when given, for the JS expression `ready`
//   reload   {session, ready?, probe?, timeoutMs}      reloads the page, waits the same way
//   goto     {session, url, ready?, probe?, timeoutMs} another URL in the same page and cookies
//   evaluate {session, expression, timeoutMs}          the (awaited) value of a JS expression
//   wait     {session, ready, probe?, timeoutMs}       waits, across the page's own reloads,
//              for the JS expression `ready`, then answers a snapshot (no click, no reload)
//   snapshot {session, probe?}   close {session}   quit {}
//
// open and reload answer with a snapshot: the address bar, the redirect chain and the response
// of the navigation (status, headers), the page's title and text, the value of `probe` (a JS
// expression evaluated in the page), the context's cookies (attributes, and whether the value is
// the token, never the value), and every request the page made: URL, status, whether it went to
// the preview's host and port, and whether its URL or Referer carried the token or its Cookie
// header carried the token cookie. A failed command carries the same snapshot as evidence.

import { clip, hostPort, serveSessions, TOKEN_PARAM } from "./chromium.mjs";

// The gateway's cookie: the per-preview name (bl_preview_token_<16 hex>) or the old shared one,
// bare or __Host- prefixed.
const TOKEN_COOKIE = new RegExp(`^(__Host-)?${TOKEN_PARAM}(_[0-9a-f]{16})?$`);

function cookiePairs(header) {
  if (!header) return [];
  return header
    .split(/;\s*/)
    .filter(Boolean)
    .map((pair) => {
      const at = pair.indexOf("=");
      return at < 0 ? [pair, ""] : [pair.slice(0, at), pair.slice(at + 1)];
    });
}

function withToken(url, token) {
  const u = new URL(url);
  if (token) u.searchParams.set(TOKEN_PARAM, token);
  return u.href;
}

class Session {
  constructor(browser, name) {
    this.browser = browser;
    this.name = name;
    this.requests = []; // Playwright Request objects, in the order the page made them
    this.navigations = [];
    this.console = [];
    this.pageErrors = [];
    this.token = null;
    this.last = null; // {kind, chain, status, headers} of the latest open or reload
  }

  async open({ url, token, ready, probe, timeoutMs = 30000 }) {
    this.url = url;
    this.token = token || null;
    this.gateway = hostPort(url);
    this.context = await this.browser.newContext({ viewport: { width: 800, height: 600 } });
    const page = (this.page = await this.context.newPage());
    page.on("request", (req) => this.requests.push(req));
    page.on("framenavigated", (frame) => {
      if (frame === page.mainFrame()) this.navigations.push(frame.url());
    });
    page.on("console", (msg) => {
      if (this.console.length < 100) this.console.push(`${msg.type()}: ${clip(msg.text(), 400)}`);
    });
    page.on("pageerror", (err) => this.pageErrors.push(clip(err, 400)));
    const response = await page.goto(withToken(url, this.token), { waitUntil: "load", timeout: timeoutMs });
    await this.#settle("open", response, ready, timeoutMs);
    return this.snapshot({ probe });
  }

  // Another URL in the same page (and so the same cookie jar), e.g. a sibling preview.
  async goto({ url, ready, probe, timeoutMs = 30000 }) {
    const response = await this.page.goto(url, { waitUntil: "load", timeout: timeoutMs });
    await this.#settle("goto", response, ready, timeoutMs);
    return this.snapshot({ probe });
  }

  async reload({ ready, probe, timeoutMs = 30000 }) {
    const response = await this.page.reload({ waitUntil: "load", timeout: timeoutMs });
    await this.#settle("reload", response, ready, timeoutMs);
    return this.snapshot({ probe });
  }

  async wait({ ready, probe, timeoutMs = 30000 }) {
    await this.page.waitForFunction(ready, null, { timeout: timeoutMs, polling: 50 });
    return this.snapshot({ probe });
  }

  async evaluate({ expression, timeoutMs = 30000 }) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`evaluate timed out after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return { value: await Promise.race([this.page.evaluate(expression), timeout]) };
    } finally {
      clearTimeout(timer);
    }
  }

  async #settle(kind, response, ready, timeoutMs) {
    // The redirect chain of the navigation, oldest first: [{url, status, location}].
    const chain = [];
    if (response) {
      for (let req = response.request(); req; req = req.redirectedFrom()) {
        const res = await req.response();
        chain.unshift({
          url: this.#redact(req.url()),
          status: res ? res.status() : null,
          location: res ? ((await res.allHeaders()).location ?? null) : null,
          setCookie: res ? this.#redact((await res.allHeaders())["set-cookie"] ?? null) : null,
        });
      }
    }
    this.last = {
      kind,
      chain,
      status: response ? response.status() : null,
      headers: response ? await response.allHeaders() : {},
    };
    if (ready) await this.page.waitForFunction(ready, null, { timeout: timeoutMs, polling: 50 });
  }

  #redact(text) {
    if (text === null || !this.token) return text;
    return text.split(this.token).join("<TOKEN>");
  }

  async #requestRecord(req) {
    let headers = {};
    try {
      headers = await req.allHeaders();
    } catch {
      headers = req.headers();
    }
    let status = null;
    try {
      const res = await req.response();
      status = res ? res.status() : null;
    } catch {
      status = null;
    }
    const referer = headers.referer ?? null;
    const cookies = cookiePairs(headers.cookie);
    const token = this.token;
    return {
      url: this.#redact(req.url()),
      method: req.method(),
      resourceType: req.resourceType(),
      navigation: req.isNavigationRequest(),
      status,
      failure: req.failure()?.errorText ?? null,
      viaGateway: (() => {
        try {
          return hostPort(req.url()) === this.gateway;
        } catch {
          return false;
        }
      })(),
      tokenInUrl: Boolean(token) && req.url().includes(token),
      tokenParamInUrl: new URL(req.url()).searchParams.has(TOKEN_PARAM),
      referer: this.#redact(referer),
      tokenInReferer: Boolean(token && referer && referer.includes(token)),
      cookieNames: cookies.map(([name]) => name),
      tokenCookie: cookies.some(([name, value]) => TOKEN_COOKIE.test(name) && (!token || value === token)),
      tokenHeader: "x-blaxel-preview-token" in headers,
    };
  }

  async snapshot({ probe } = {}) {
    const page = this.page;
    let probed = null;
    let title = null;
    let text = null;
    if (page) {
      try {
        title = await page.title();
        text = await page.evaluate(() => document.body?.innerText ?? "");
        if (probe) probed = await page.evaluate(probe);
      } catch (err) {
        probed = { unreadable: clip(err.message || err) };
      }
    }
    const cookies = this.context ? await this.context.cookies() : [];
    return {
      session: this.name,
      gateway: this.gateway,
      url: page ? this.#redact(page.url()) : null,
      tokenInAddressBar: page ? new URL(page.url()).searchParams.has(TOKEN_PARAM) : null,
      navigation: this.last,
      navigations: this.navigations.map((u) => this.#redact(u)),
      title,
      text: text === null ? null : clip(text, 2000),
      probe: probed,
      cookies: cookies.map((c) => ({
        name: c.name,
        domain: c.domain,
        path: c.path,
        httpOnly: c.httpOnly,
        secure: c.secure,
        sameSite: c.sameSite,
        session: c.expires === -1,
        isToken: Boolean(this.token) && c.value === this.token,
      })),
      requests: await Promise.all(this.requests.map((r) => this.#requestRecord(r))),
      console: this.console.slice(-40),
      pageErrors: this.pageErrors,
    };
  }

  async close() {
    if (this.context) await this.context.close();
    this.context = null;
    this.page = null;
    return {};
  }
}

function serve() {
  return serveSessions(Session, (s, op, cmd) => {
    if (op === "reload") return s.reload(cmd);
    if (op === "goto") return s.goto(cmd);
    if (op === "evaluate") return s.evaluate(cmd);
    if (op === "wait") return s.wait(cmd);
    if (op === "snapshot") return s.snapshot(cmd);
    throw new Error(`unknown op ${op}`);
  }, (s, cmd) => (s.page ? s.snapshot({ probe: cmd.probe }) : null));
}

if (!process.argv.includes("--serve")) {
  process.stderr.write("usage: node private.mjs --serve (see the header of this file)\n");
  process.exit(2);
}
await serve();
process.exit(0);
