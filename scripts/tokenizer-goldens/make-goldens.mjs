// Golden token ids for gsa's tokenizer tests, written by the reference library (@huggingface/tokenizers).
//
//   npm install && node make-goldens.mjs [DATA_DIR] [--trained DIR] [--bench-only]
//
// DATA_DIR is the shared data folder (default ../../../shared/data beside the checkout). For each real
// tokenizer (DATA_DIR/tokenizers/{llama3,qwen3}) it writes tests/data/tokenizer/<name>.json with the ids of
// hard cases (stored with their text) and of slices of real text (stored as file, byte offset, byte length
// only, so no data file is copied into the repository), then prints the reference's encode throughput.
// --trained DIR additionally encodes the same cases with DIR/tokenizer.json (a tokenizer gsa trained) and
// writes tests/data/tokenizer/trained.json.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = (name) => {
  const i = args.indexOf(name);
  if (i < 0) return null;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const benchOnly = args.includes("--bench-only");
if (benchOnly) args.splice(args.indexOf("--bench-only"), 1);
const trainedDir = flag("--trained");
const dataDir = path.resolve(args[0] ?? path.join(here, "../../../shared/data"));
const outDir = path.join(here, "../../tests/data/tokenizer");

const hardCases = [
  ["empty", ""],
  ["space", " "],
  ["hello", "Hello world"],
  ["edges", "  leading and trailing spaces  "],
  ["contractions", "I'm can't you'LL WE'VE they'RE it'S I'd we'll 'ſ 'K"],
  ["emoji", "I love 🦀 and 👨‍👩‍👧‍👦 families! 🏳️‍🌈 🇯🇵🇺🇸 👍🏽✨🔥💯"],
  ["cjk", "你好，世界！これは日本語のテキストです。한국어 텍스트도 있습니다. 中文混合English文本。"],
  ["combining", "e\u0301 vs \u00e9; A\u030A vs \u00c5 vs \u212b; n\u0303; Z\u0334\u0321\u032aa\u0337\u0353l\u0336g\u0335o\u0338"],
  ["hangul-jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u116e\u11a8"],
  ["digits", "1234567890 3.14159 1,000,000 12345678901234567890 ١٢٣٤٥ ０１２３ 2024-01-01T12:34:56Z 1e-9"],
  ["whitespace", "a" + " ".repeat(100) + "b\t\t\t\n\n\n   \n" + " ".repeat(1000) + "\r\n\r\n c \u00a0d\u3000e\u0085f\u2028g"],
  ["long-runs", "!".repeat(300) + " " + "=".repeat(257) + " " + "a".repeat(500) + " " + "9".repeat(50) + " supercalifragilisticexpialidocious".repeat(3)],
  ["llama3-special", "<|begin_of_text|>Hello<|eot_id|> <|start_header_id|>user<|end_header_id|>\n\nHi<|reserved_special_token_7|>x"],
  ["qwen3-special", "<|im_start|>user\nHi<|im_end|>\n<think>\nhmm</think><|endoftext|><tool_call>{}</tool_call>"],
  ["gist-special", "chunk one<|gist|>chunk two<|gist_1|><|gist_2|><|gist_3|><|endoftext|> <|gist"],
  ["code", "def f(x):\n    return x**2  # comment\n\tif (a&&b) { c++; }\n#include <stdio.h>\nint main(){return 0;}"],
  ["scripts", "مرحبا بالعالم שלום עולם नमस्ते दुनिया สวัสดีครับ Привет, мир! Γειά σου Κόσμε"],
  ["controls", "a\u0000b\u0001c\u0007d\u007f e\u200bf\u200dg\ufeffh"],
  ["astral", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 𠀀𠀁 🀄"],
  ["punct", "Wait... what?! (really) [yes] {no} \"quoted\" 'single' — en–dash … «guillemets» ¿Qué? ¡Sí!"],
  ["urls", "https://example.com/path?q=1&r=two#frag user@example.org C:\\Windows\\path"],
];

// Real text: [file under DATA_DIR/text, byte offset, byte length], moved to UTF-8 character boundaries.
const sliceSpecs = [
  ["books/pride_and_prejudice.txt", 100000, 20000],
  ["books/devils_dictionary.txt", 50000, 10000],
  ["books/cape_cod.txt", 200000, 8000],
  ["haystack/worked.txt", 0, 8000],
  ["haystack/submarine.txt", 3000, 6000],
  ["misc/tinyshakespeare.txt", 500000, 10000],
  ["misc/wikitext2-valid.txt", 300000, 10000],
];

function slice(file, offset, length) {
  const buf = fs.readFileSync(path.join(dataDir, "text", file));
  const boundary = (i) => {
    while (i < buf.length && (buf[i] & 0xc0) === 0x80) i++;
    return Math.min(i, buf.length);
  };
  const b = boundary(offset), e = boundary(offset + length);
  return { file, offset: b, length: e - b, text: buf.subarray(b, e).toString("utf8") };
}

function load(dir) {
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const cfgPath = path.join(dir, "tokenizer_config.json");
  const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
  return new Tokenizer(json, cfg);
}

function goldens(name, tok, slices) {
  const cases = [];
  for (const [case_name, text] of hardCases) {
    const ids = tok.encode(text, { add_special_tokens: false }).ids;
    const decoded = ids.length ? tok.decode(ids, { clean_up_tokenization_spaces: false }) : "";
    cases.push({ name: case_name, text, decoded, ids });
  }
  for (const s of slices) {
    const ids = tok.encode(s.text, { add_special_tokens: false }).ids;
    cases.push({ name: `${s.file}@${s.offset}`, file: s.file, offset: s.offset, length: s.length, ids });
  }
  const out = path.join(outDir, `${name}.json`);
  // One case per line keeps diffs readable.
  const body = cases.map((c) => "  " + JSON.stringify(c)).join(",\n");
  fs.writeFileSync(out, `{"tokenizer": ${JSON.stringify(name)}, "cases": [\n${body}\n]}\n`);
  console.log(`wrote ${path.relative(process.cwd(), out)} (${cases.length} cases)`);
}

function bench(name, dir, text) {
  const mb = Buffer.byteLength(text) / 1e6;
  const t0 = performance.now();
  const tok = load(dir);
  const t1 = performance.now();
  const n = tok.encode(text, { add_special_tokens: false }).ids.length;
  const t2 = performance.now();
  tok.encode(text, { add_special_tokens: false });
  const t3 = performance.now();
  console.log(
    `${name}: load ${((t1 - t0) / 1e3).toFixed(2)} s; encode ${mb.toFixed(2)} MB -> ${n} ids: ` +
      `first call ${(mb / ((t2 - t1) / 1e3)).toFixed(2)} MB/s, second call (warm cache) ${(mb / ((t3 - t2) / 1e3)).toFixed(2)} MB/s`
  );
}

const slices = sliceSpecs.map(([f, o, l]) => slice(f, o, l));
fs.mkdirSync(outDir, { recursive: true });
if (!benchOnly) {
  for (const name of ["llama3", "qwen3"]) goldens(name, load(path.join(dataDir, "tokenizers", name)), slices);
  if (trainedDir) goldens("trained", load(trainedDir), slices);
}
// Throughput on ~1 MB of real text (the first 1,000,000 bytes of Little Women).
const benchText = slice("books/little_women.txt", 0, 1000000).text;
for (const name of ["llama3", "qwen3"]) bench(name, path.join(dataDir, "tokenizers", name), benchText);
