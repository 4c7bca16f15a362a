// webpack-dev-server behind the preview gateway. Environment:
//   PORT               port to listen on (required)
//   DEV_HOST           listen address (default 127.0.0.1)
//   DEV_ALLOWED_HOSTS  comma-separated allowedHosts (default .localhost)
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));

export default {
  mode: "development",
  context: here,
  entry: "./src/index.js",
  output: { path: `${here}dist`, filename: "main.js", publicPath: "/" },
  devtool: false,
  stats: "errors-warnings",
  infrastructureLogging: { level: "warn" },
  devServer: {
    host: process.env.DEV_HOST || "127.0.0.1",
    port: Number(process.env.PORT),
    allowedHosts: (process.env.DEV_ALLOWED_HOSTS || ".localhost").split(","),
    // Hot updates only: a failed update must fail the test, not reload the page silently.
    hot: "only",
    liveReload: false,
    static: { directory: here, watch: false },
    client: {
      // As soon as host or port is set, the client would dial ws://<host>:<port>/ws of the dev
      // server itself; auto://0.0.0.0:0 takes protocol, host and port from the page instead.
      webSocketURL: "auto://0.0.0.0:0/ws",
      overlay: false,
      logging: "info",
    },
  },
};
