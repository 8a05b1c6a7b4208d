// Bundles noVNC's RFB class (npm @novnc/novnc, installed beside this file by
// build_novnc.sh) into one minified ES module for the server page's console, leaving out
// what that console never uses. Run by build_novnc.sh: node build_novnc.mjs VERSION OUT.
//
// The console connects through the noVNC proxy, whose token is the right to the screen,
// to a guest's VNC server that asks for no password (QEMU's `-vnc` without `password`,
// the fake driver's screen): security type None. It asks for raw, CopyRect, RRE and
// Hextile, which QEMU 7.2's VNC server sends (it also offers zlib, Tight and ZRLE, which
// need zlib in the browser: 18 KB more) and every RFB server must take raw.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as esbuild from "esbuild";

const [version, out] = process.argv.slice(2);
const CORE = "node_modules/@novnc/novnc/core";

const fail = (what) =>
  `const missing = () => { throw new Error("not in this noVNC build: ${what}"); };`;
const NOT_REQUESTED = `${fail("an encoding the console does not request")}
export default class { decodeRect() { missing(); } }`;

// Modules replaced whole, each by a stub that throws if it is ever reached.
const STUBS = {
  // DES (the VNC password), MD5/AES/RSA/DH (Apple's ARD, MSLogonII, RSA-AES): the
  // authentications other than None. A password asked for stops the console before any
  // of it runs (console.js: "credentialsrequired").
  "crypto/crypto.js": `${fail("VNC password and RSA-AES authentication")}
export default new Proxy({}, { get: missing });`,
  "ra2.js": `${fail("RSA-AES authentication")}
export default class { constructor() { missing(); } }`,
  // pako's zlib: only for the encodings below and the extended clipboard (not requested:
  // clipboard text goes as the classic ClientCutText/ServerCutText, Latin-1).
  "inflator.js": `${fail("zlib")}
export default class { constructor() { missing(); } }`,
  "deflator.js": `${fail("zlib")}
export default class { constructor() { missing(); } }`,
  // The decoders of the encodings no longer requested (the edit of _sendEncodings).
  "decoders/zlib.js": NOT_REQUESTED,
  "decoders/tight.js": NOT_REQUESTED,
  "decoders/tightpng.js": NOT_REQUESTED,
  "decoders/zrle.js": NOT_REQUESTED,
  "decoders/jpeg.js": NOT_REQUESTED,
  "decoders/h264.js": NOT_REQUESTED,
};

// Exact edits of noVNC's own text: each must be found once, or the build stops.
const EDITS = {
  "rfb.js": [
    // Offer the server only the security types this build can take: None, and the VNC
    // password (so that a server asking for one is told as "credentialsrequired").
    [
      `            securityTypeRA2ne,
            securityTypeTight,
            securityTypeVeNCrypt,
            securityTypeXVP,
            securityTypeARD,
            securityTypeMSLogonII,
            securityTypePlain,
`,
      "",
    ],
    // Ask only for the encodings whose decoders are kept.
    [
      `            if (supportsWebCodecsH264Decode) {
                encs.push(encodings.encodingH264);
            }
            encs.push(encodings.encodingTight);
            encs.push(encodings.encodingTightPNG);
            encs.push(encodings.encodingZRLE);
            encs.push(encodings.encodingJPEG);
            encs.push(encodings.encodingHextile);
            encs.push(encodings.encodingRRE);
            encs.push(encodings.encodingZlib);
`,
      `            encs.push(encodings.encodingHextile);
            encs.push(encodings.encodingRRE);
`,
    ],
    ["        encs.push(encodings.pseudoEncodingExtendedClipboard);\n", ""],
  ],
  // The H.264 decoder's probe (a top-level await decoding a sample frame) goes with it.
  "util/browser.js": [
    ["supportsWebCodecsH264Decode = await _checkWebCodecsH264DecodeSupport();\n", ""],
  ],
};

// keysym.js is X11's table of 554 key names; noVNC's code names 206 of them. Only those
// are kept (it is only ever read as KeyTable.<name>).
const usedKeysyms = () => {
  const used = new Set();
  for (const file of readdirSync(CORE, { recursive: true })) {
    if (!file.endsWith(".js") || file.endsWith("keysym.js")) continue;
    const text = readFileSync(join(CORE, file), "utf8");
    for (const [, name] of text.matchAll(/KeyTable\.(\w+)/g)) used.add(name);
  }
  return used;
};

const keysymsUsed = (text) => {
  const used = usedKeysyms();
  const lines = text.split("\n").filter((line) => {
    const entry = line.match(/^\s+(\w+):\s+0x[0-9a-fA-F]+,/);
    return !entry || used.has(entry[1]);
  });
  const kept = lines.filter((line) => /^\s+\w+:\s+0x/.test(line)).length;
  if (kept !== used.size) throw new Error(`keysym.js: ${kept} of the ${used.size} names used`);
  return lines.join("\n");
};

const edited = (path, text) => {
  let result = text;
  for (const [before, after] of EDITS[path] ?? []) {
    const found = result.split(before).length - 1;
    if (found !== 1) throw new Error(`${path}: an edit's text found ${found} times`);
    result = result.replace(before, after);
  }
  return result;
};

const trim = {
  name: "trim-novnc",
  setup(build) {
    build.onLoad({ filter: /[\\/]@novnc[\\/]novnc[\\/]core[\\/].*\.js$/ }, ({ path }) => {
      const name = path.replaceAll("\\", "/").split("/novnc/core/")[1];
      if (name in STUBS) return { contents: STUBS[name], loader: "js" };
      let text = readFileSync(path, "utf8");
      if (name === "input/keysym.js") text = keysymsUsed(text);
      return { contents: edited(name, text), loader: "js" };
    });
  },
};

writeFileSync("entry.js", 'export { default as RFB } from "@novnc/novnc";\n');
const result = await esbuild.build({
  entryPoints: ["entry.js"],
  bundle: true,
  minify: true,
  // noVNC's private members (this._name, never read by name from outside) get short names.
  mangleProps: /^_/,
  format: "esm",
  target: "es2022",
  legalComments: "none",
  banner: {
    js:
      `/*! noVNC ${version} (npm @novnc/novnc@${version}): core/rfb.js and its imports, ` +
      "without the authentications other than None and VNC password, zlib and the " +
      "encodings other than raw, CopyRect, RRE and Hextile (tools/build_novnc.mjs). " +
      "MPL-2.0; the source is that npm package. Licenses: licenses/novnc.LICENSE */",
  },
  plugins: [trim],
  write: false,
});
const bytes = result.outputFiles[0].contents;
writeFileSync(out, bytes);
const sha256 = createHash("sha256").update(bytes).digest("hex");
console.log(`${out}: ${bytes.length} bytes, sha256 ${sha256}`);
