// Renders gsa's chat-template cases with the reference renderer, @huggingface/jinja (what transformers.js
// uses), so the C++ renderer can be compared with it (tests/chat/).
//
//   npm ci && node render-cases.mjs [--cases FILE] [--data DIR] [--out FILE] [--check FILE]
//
// --cases  the case list (default: tests/data/chat/cases.json of this checkout)
// --data   the shared data folder holding tokenizers/<name>/tokenizer_config.json (default: $GSA_DATA or
//          ../shared/data beside the checkout); cases whose template is absent are written as skipped
// --out    where to write the renders (default: stdout); tests/data/chat/goldens.json is this output
// --check  also compare the renders with FILE (the committed goldens) and exit 1 on any difference
//
// A case's context is passed to Template.render as it is, plus bos_token / eos_token when the template has
// them and the context does not (as transformers.js passes the tokenizer's special tokens). The output per
// case is {"output": text} or {"error": message}.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const casesPath = opt("--cases", path.join(repo, "tests/data/chat/cases.json"));
const dataDir = opt("--data", process.env.GSA_DATA || path.join(repo, "../shared/data"));
const outPath = opt("--out", null);
const checkPath = opt("--check", null);

const jinjaVersion = JSON.parse(
  fs.readFileSync(path.join(here, "node_modules/@huggingface/jinja/package.json"), "utf8")).version;
const spec = JSON.parse(fs.readFileSync(casesPath, "utf8"));
const casesDir = path.dirname(casesPath);

// A special token of tokenizer_config.json: a string, {"content": ...} or null.
function specialToken(v) {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof v.content === "string") return v.content;
  return "";
}

function loadTemplate(t) {
  if (t.shared) {
    const file = path.join(dataDir, t.shared, "tokenizer_config.json");
    if (!fs.existsSync(file)) return null;
    const config = JSON.parse(fs.readFileSync(file, "utf8"));
    return { source: config.chat_template, bos: specialToken(config.bos_token), eos: specialToken(config.eos_token) };
  }
  const source = t.file ? fs.readFileSync(path.join(casesDir, t.file), "utf8") : t.source;
  return { source, bos: t.bos_token || "", eos: t.eos_token || "" };
}

const results = {};
for (const c of spec.cases) {
  const t = c.source !== undefined ? { source: c.source, bos_token: c.bos_token, eos_token: c.eos_token }
                                   : spec.templates[c.template];
  if (!t) throw new Error(`case ${c.name}: unknown template ${c.template}`);
  const tpl = loadTemplate(t);
  if (!tpl) {
    results[c.name] = { skipped: `needs ${path.join(t.shared, "tokenizer_config.json")} in the data folder` };
    continue;
  }
  const context = { ...c.context };
  if (tpl.bos && !("bos_token" in context)) context.bos_token = tpl.bos;
  if (tpl.eos && !("eos_token" in context)) context.eos_token = tpl.eos;
  try {
    results[c.name] = { output: new Template(tpl.source).render(context) };
  } catch (e) {
    results[c.name] = { error: String(e.message ?? e) };
  }
}

const doc = { renderer: `@huggingface/jinja ${jinjaVersion}`, cases: results };
const text = JSON.stringify(doc, null, 1) + "\n";
if (outPath) fs.writeFileSync(outPath, text);
else if (!checkPath) process.stdout.write(text);

if (checkPath) {
  const old = JSON.parse(fs.readFileSync(checkPath, "utf8"));
  let differ = 0;
  for (const [name, r] of Object.entries(results)) {
    if (r.skipped) continue;
    if (JSON.stringify(old.cases[name]) !== JSON.stringify(r)) {
      console.error(`${name}: the reference now gives ${JSON.stringify(r)}, ${checkPath} has ${JSON.stringify(old.cases[name])}`);
      differ++;
    }
  }
  if (differ) {
    console.error(`${differ} case(s) differ from ${checkPath}: rerun this script with --out to regenerate it`);
    process.exit(1);
  }
  console.error(`all rendered cases equal ${checkPath} (${jinjaVersion})`);
}
