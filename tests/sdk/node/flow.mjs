// The preview flow of the unmodified @blaxel/core SDK against a running preview-gateway.
//
// Run by tests/sdk/test_node_sdk.py. The SDK is pointed at the gateway by its own environment
// variables only (BL_API_URL=http://127.0.0.1:<api>/v0, BL_API_KEY, BL_WORKSPACE;
// shared/design/blaxel-api.md §1.2). FLOW_EDGE, FLOW_SANDBOX and FLOW_PORT say where the edge
// listens, which sandbox was registered beforehand and which port to preview.
// Prints one line "FLOW-RESULT <json>" of what each step saw; the test makes the assertions.

import { SandboxInstance } from "@blaxel/core";
import http from "node:http";

const SANDBOX = process.env.FLOW_SANDBOX;
const PORT = Number(process.env.FLOW_PORT);
const [EDGE_HOST, EDGE_PORT] = process.env.FLOW_EDGE.split(":");

// GET the preview through the gateway's edge on loopback, with the preview's Host header.
function edgeStatus(url, token) {
  const host = new URL(url).hostname;
  const headers = { Host: host };
  if (token) headers["X-Blaxel-Preview-Token"] = token;
  return new Promise((resolve, reject) => {
    const req = http.get({ host: EDGE_HOST, port: Number(EDGE_PORT), path: "/", headers }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", reject);
  });
}

// The SDK throws the parsed error body (blaxel-api.md §2): keep what the caller can see of it.
async function thrown(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    return { code: e?.code ?? null, error: e?.error ?? null, message: e?.message ?? null };
  }
}

async function flow() {
  const out = {};
  const sandbox = await SandboxInstance.get(SANDBOX);
  out.get = { name: sandbox.metadata.name, status: sandbox.status, h2: Boolean(sandbox.h2Session) };

  const body = {
    metadata: { name: "web" },
    spec: { port: PORT, public: false, responseHeaders: { "Access-Control-Allow-Origin": "*" } },
  };
  const first = await sandbox.previews.createIfNotExists(body);
  const second = await sandbox.previews.createIfNotExists(body);
  out.createIfNotExists = {
    first: { name: first.name, url: first.spec.url },
    second: { name: second.name, url: second.spec.url },
    resourceName: first.metadata.resourceName,
  };
  out.conflict = await thrown(sandbox.previews.create(body));
  out.missing = await thrown(sandbox.previews.get("nope"));

  out.privateEdgeWithoutToken = await edgeStatus(first.spec.url, null);
  const token = await first.tokens.create(new Date(Date.now() + 3600 * 1000));
  out.tokensCreate = {
    name: token.previewToken.metadata.name,
    hasValue: token.value.length > 0,
    expiresAt: token.expiresAt,
    expired: token.expired,
  };
  out.privateEdgeWithToken = await edgeStatus(first.spec.url, token.value);
  const listed = await first.tokens.list();
  out.tokensList = listed.map((t) => ({ name: t.previewToken.metadata.name, expired: t.expired }));
  out.tokensDelete = await first.tokens.delete(token.previewToken.metadata.name);
  out.tokensAfterDelete = (await first.tokens.list()).map((t) => t.previewToken.metadata.name);
  out.privateEdgeRevoked = await edgeStatus(first.spec.url, token.value);

  out.previewsList = (await sandbox.previews.list()).map((p) => p.name);
  const removed = await sandbox.previews.delete("web");
  out.previewsDelete = { name: removed.metadata.name, status: removed.status };
  out.getAfterDelete = await thrown(sandbox.previews.get("web"));
  out.previewsAfterDelete = (await sandbox.previews.list()).map((p) => p.name);

  // A second preview, to see the sandbox delete take it along.
  const kept = await sandbox.previews.createIfNotExists({
    metadata: { name: "kept" },
    spec: { port: PORT, public: true },
  });
  out.keptEdgeBefore = await edgeStatus(kept.spec.url, null);
  const terminated = await SandboxInstance.delete(SANDBOX);
  out.sandboxDelete = { name: terminated.metadata.name, status: terminated.status };
  out.sandboxGetAfterDelete = await thrown(SandboxInstance.get(SANDBOX));
  out.previewsAfterSandboxDelete = await thrown(sandbox.previews.list());
  out.keptEdgeAfter = await edgeStatus(kept.spec.url, null);
  return out;
}

const result = await flow();
process.stdout.write(`FLOW-RESULT ${JSON.stringify(result)}\n`);
