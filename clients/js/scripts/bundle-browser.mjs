// Build step after tsc: bundle dist/index.js with protobufjs (CommonJS, which browsers cannot
// import) into one self-contained ES module, dist/browser/liqi-client.js, for <script type="module">.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

await build({
  entryPoints: [join(root, "dist", "index.js")],
  outfile: join(root, "dist", "browser", "liqi-client.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  sourcemap: true,
  legalComments: "eof",
  logLevel: "warning",
});
