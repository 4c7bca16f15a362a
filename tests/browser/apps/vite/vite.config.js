// Vite behind the preview gateway. Environment:
//   PORT               port to listen on (required)
//   DEV_HOST           listen address (default 127.0.0.1)
//   DEV_ALLOWED_HOSTS  comma-separated server.allowedHosts (default .localhost)
//   HMR_CLIENT_PORT    server.ws.clientPort: pins the HMR socket to that port (and disables
//                      Vite's silent fallback to a direct socket); unset: the page's own port
//   HMR_PING_MS        server.ws.timeout (client ping interval)
import { fileURLToPath } from "node:url";

const ws = {};
if (process.env.HMR_CLIENT_PORT) ws.clientPort = Number(process.env.HMR_CLIENT_PORT);
if (process.env.HMR_PING_MS) ws.timeout = Number(process.env.HMR_PING_MS);

export default {
  root: fileURLToPath(new URL(".", import.meta.url)),
  clearScreen: false,
  logLevel: "info",
  server: {
    host: process.env.DEV_HOST || "127.0.0.1",
    port: Number(process.env.PORT),
    strictPort: true,
    allowedHosts: (process.env.DEV_ALLOWED_HOSTS || ".localhost").split(","),
    ...(Object.keys(ws).length ? { ws } : {}),
  },
};
