// Builds the console into server/internal/console/dist, which palyrad embeds (go:embed)
// and serves at / on its one listener. `npm run dev` proxies the API to a palyrad at
// PALYRA_URL (default https://127.0.0.1:7443) so that the page stays same-origin.
import { readFileSync, writeFileSync } from "node:fs";
import { defineConfig, type Plugin } from "vite";
import react from "@vitejs/plugin-react";

const outDir = new URL("../server/internal/console/dist/", import.meta.url).pathname;

/** keepPlaceholder writes back dist/README.md, the one committed file of dist/ (go:embed
 * needs the directory to exist without a build), after the build emptied the directory. */
function keepPlaceholder(): Plugin {
  let text = "";
  return {
    name: "palyra-keep-placeholder",
    buildStart() {
      text = readFileSync(outDir + "README.md", "utf8");
    },
    writeBundle() {
      writeFileSync(outDir + "README.md", text);
    },
  };
}

export default defineConfig({
  plugins: [react(), keepPlaceholder()],
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    // No inline data: scripts or styles; the CSP allows only same-origin files.
    assetsInlineLimit: 0,
  },
  server: {
    proxy: {
      "^/(palyra\\.|grpc\\.|v1/)": {
        target: process.env.PALYRA_URL ?? "https://127.0.0.1:7443",
        secure: false,
        changeOrigin: true,
      },
    },
  },
});
