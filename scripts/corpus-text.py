#!/usr/bin/env python3
"""Plain-text corpus from unpacked Debian packages (called by scripts/fetch-corpus.sh; standard library only).

    corpus-text.py --unpacked DIR --packages FILE --out DIR [--heldout-permille 10] [--min-chars 200]

--packages holds one line per package, "name version deb-sha256", in the order to read them; DIR/<name>/ is the
package unpacked with dpkg-deb -x. Each package has a rule (RULES; a package without one takes the generic rule)
saying which of its files are documents and how to read them: plain text (.txt, .rst, .pod, info, C sources, gzip
or not), HTML (tags stripped, navigation dropped), man pages (rendered by groff). A file that is not UTF-8, holds a
NUL byte, or leaves fewer than --min-chars characters is dropped; whitespace is normalised; exact duplicates (same
normalised text) keep their first occurrence in (package, path) order.

Outputs (all written atomically, byte-identical on every run over the same packages):
  train.jsonl     {"text", "source"} per line, in a fixed pseudo-random order (sha256 of the source), so that any
                  prefix of lines mixes every package;
  heldout.jsonl   the documents whose sha256("gsa-heldout:" + source) falls below --heldout-permille / 1000, by
                  document, so that no training run sees any part of them;
  heldout.txt     the same documents as plain text, separated by blank lines (for gsa perplexity --text);
  manifest.json   per package: version, .deb sha256, files read, documents kept / dropped, bytes; per output: lines,
                  UTF-8 bytes of text, sha256 of the file.
"""
import argparse
import gzip
import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys
import unicodedata

# Per package: regular expressions over the path inside the package; the first that matches a file makes it a
# document. Chosen so that one form of each document is read (Sphinx sources rather than their HTML, git's
# AsciiDoc rather than its HTML, the plain-text GNU standards rather than their info copy).
RULES = {
    "linux-doc-6.1": [r"usr/share/doc/linux-doc-6\.1/Documentation/.*\.(rst|txt|yaml)(\.gz)?$"],
    "python3.11-doc": [r"usr/share/doc/python3\.11/html/_sources/.*\.rst\.txt$"],
    "perl-doc": [r"usr/share/perl/[^/]+/pod/.*\.pod(\.gz)?$"],
    "git-doc": [r"usr/share/doc/git-doc/.*\.txt(\.gz)?$"],
    "postgresql-doc-15": [r"usr/share/doc/postgresql-doc-15/html/.*\.html$"],
    "debian-reference-en": [r"usr/share/debian-reference/debian-reference\.en\.txt\.gz$"],
    "bash-doc": [r"usr/share/doc/bash/bash\.html$"],
    "gnu-standards": [r"usr/share/doc/gnu-standards/(standards|maintain)\.text\.gz$"],
    "autoconf-doc": [r"usr/share/info/autoconf\.info(-\d+)?\.gz$"],
    "manpages": [r"usr/share/man/man\d/[^/]+\.\d\w*(\.gz)?$"],
    "manpages-dev": [r"usr/share/man/man\d/[^/]+\.\d\w*(\.gz)?$"],
    # linux-source-*: fetch-corpus.sh unpacks the chosen source folders of its tarball under src/.
    "linux-source-6.1": [r"src/.*\.[ch]$", r"src/.*/Kconfig$"],
}
GENERIC = [r"usr/share/(doc|info)/.*\.(txt|text|rst|md|html|info)(\.gz)?$"]
SKIP = re.compile(r"(^|/)(copyright|changelog[^/]*|ChangeLog[^/]*|NEWS\.Debian[^/]*|README\.Debian[^/]*)$")


class TextFromHtml(html.parser.HTMLParser):
    """Visible text of an HTML page: scripts, styles, navigation and Sphinx/DocBook chrome dropped, block
    elements on their own lines, whitespace collapsed outside <pre>."""

    DROP_TAGS = {"script", "style", "head", "nav", "noscript", "svg", "button"}
    DROP_CLASSES = {"sphinxsidebar", "related", "footer", "headerlink", "navheader", "navfooter", "toc",
                    "navigation", "breadcrumbs"}
    BLOCKS = {"p", "div", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dt", "dd", "tr",
              "table", "pre", "blockquote", "section", "article", "title", "caption", "figure", "body"}
    VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.drop_tag, self.drop_depth, self.pre = [], None, 0, 0

    def handle_starttag(self, tag, attrs):
        if self.drop_tag is not None:
            if tag == self.drop_tag and tag not in self.VOID:
                self.drop_depth += 1
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in self.DROP_TAGS or (classes & self.DROP_CLASSES and tag not in self.VOID):
            self.drop_tag, self.drop_depth = tag, 1
            return
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCKS:
            self.out.append("\n")
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_endtag(self, tag):
        if self.drop_tag is not None:
            if tag == self.drop_tag:
                self.drop_depth -= 1
                if self.drop_depth == 0:
                    self.drop_tag = None
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data):
        if self.drop_tag is not None:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.out or self.out[-1].endswith("\n"):
                data = data.lstrip(" ")  # the collapsed line break of the source, not indentation
            if not data:
                return
        self.out.append(data)

    def text(self):
        return "".join(self.out).replace("\u00b6", "")


def html_to_text(s):
    p = TextFromHtml()
    p.feed(s)
    p.close()
    return p.text()


POD_DIRECTIVE = re.compile(r"^=(head\d|item|over|back|cut|pod|begin|end|for|encoding)\b ?", re.M)
POD_CODE = re.compile(r"[BCEFILSXZ]<([^<>]*)>")


def pod_to_text(s):
    s = POD_DIRECTIVE.sub("", s)
    for _ in range(4):  # nested codes, innermost first
        s, n = POD_CODE.subn(r"\1", s)
        if n == 0:
            break
    return s


def info_to_text(s):
    # Node separators (0x1f) and the "File: ..., Node: ..." header line that follows each.
    s = re.sub(r"\x1f\n?(File: [^\n]*\n)?", "\n", s)
    return s.replace("\x7f", "")


def man_to_text(raw, path):
    if re.match(rb"\.so\s", raw.lstrip()):
        return ""  # a link to another page
    r = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-P", "-cbou", "-rLL=100n"], input=raw,
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        raise ValueError(f"groff failed on {path}: {r.stderr.decode(errors='replace')[:200]}")
    return r.stdout.decode("utf-8")


def normalise(s):
    s = unicodedata.normalize("NFC", s.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in s.split("\n")]
    s = "\n".join(lines)
    s = re.sub(r"\n{3,}", "\n\n", s)  # at most one empty line in a row
    return s.strip("\n")


def read_document(path, rel):
    """Text of one file, or None when it is not text."""
    with open(path, "rb") as f:
        raw = f.read()
    if rel.endswith(".gz"):
        raw = gzip.decompress(raw)
        rel = rel[:-3]
    if re.search(r"\.info(-\d+)?$", rel):
        raw = raw.replace(b"\0\b[index\0\b]", b"")  # the index markers of info files
    if b"\0" in raw:
        return None
    if re.search(r"/man/man\d/", rel):
        return man_to_text(raw, rel)
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if rel.endswith((".html", ".htm")):
        return html_to_text(s)
    if rel.endswith(".pod"):
        return pod_to_text(s)
    if re.search(r"\.info(-\d+)?$", rel):
        return info_to_text(s)
    return s


def digest(tag, s):
    return hashlib.sha256((tag + s).encode()).hexdigest()


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--unpacked", required=True)
    ap.add_argument("--packages", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--heldout-permille", type=int, default=10)
    ap.add_argument("--min-chars", type=int, default=200)
    a = ap.parse_args()
    if not 0 <= a.heldout_permille < 1000:
        sys.exit("--heldout-permille must be in [0, 1000)")

    packages = []
    with open(a.packages) as f:
        for line in f:
            if line.strip():
                name, version, sha = line.split()
                packages.append((name, version, sha))

    seen, docs, report = set(), [], []
    for name, version, sha in packages:
        root = os.path.join(a.unpacked, name)
        if not os.path.isdir(root):
            sys.exit(f"{root}: package {name} is not unpacked (run scripts/fetch-corpus.sh)")
        rules = [re.compile(r) for r in RULES.get(name, GENERIC)]
        files = []
        for d, _, names in os.walk(root):
            for n in names:
                rel = os.path.relpath(os.path.join(d, n), root)
                if os.path.isfile(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n)) \
                        and not SKIP.search(rel) and any(r.search(rel) for r in rules):
                    files.append(rel)
        files.sort()
        st = {"package": name, "version": version, "deb_sha256": sha, "files": len(files), "documents": 0,
              "chars": 0, "dropped_not_text": 0, "dropped_short": 0, "dropped_duplicate": 0}
        for rel in files:
            text = read_document(os.path.join(root, rel), rel)
            if text is None:
                st["dropped_not_text"] += 1
                continue
            text = normalise(text)
            if len(text) < a.min_chars:
                st["dropped_short"] += 1
                continue
            h = digest("", text)
            if h in seen:
                st["dropped_duplicate"] += 1
                continue
            seen.add(h)
            source = f"{name}:{rel}"
            docs.append((source, text))
            st["documents"] += 1
            st["chars"] += len(text)
        if st["documents"] == 0:
            sys.exit(f"package {name}: no document matched its rule ({len(files)} files); check RULES")
        report.append(st)
        print(f"{name} {version}: {st['files']} files, {st['documents']} documents, {st['chars']} characters",
              file=sys.stderr)

    # Held-out by document: the hash of the source alone decides, so the split does not move when packages are
    # added; the name (without version) keeps a document in its split across package updates.
    def heldout(source):
        return int(digest("gsa-heldout:", source)[:8], 16) % 1000 < a.heldout_permille

    train = sorted((d for d in docs if not heldout(d[0])), key=lambda d: digest("gsa-order:", d[0]))
    held = sorted((d for d in docs if heldout(d[0])), key=lambda d: d[0])
    os.makedirs(a.out, exist_ok=True)

    def jsonl(ds):
        return "".join(json.dumps({"text": t, "source": s}, ensure_ascii=False) + "\n" for s, t in ds).encode()

    outputs = {}
    for fname, ds, data in (("train.jsonl", train, jsonl(train)), ("heldout.jsonl", held, jsonl(held)),
                            ("heldout.txt", held, "\n\n".join(t for _, t in held).encode() + b"\n")):
        o = write_atomic(os.path.join(a.out, fname), data)
        o["documents"] = len(ds)
        o["text_bytes"] = sum(len(t.encode()) for _, t in ds)
        outputs[fname] = o
    manifest = {"format": "gsa-corpus-1", "heldout_permille": a.heldout_permille, "min_chars": a.min_chars,
                "packages": report, "outputs": outputs}
    write_atomic(os.path.join(a.out, "manifest.json"), (json.dumps(manifest, indent=1) + "\n").encode())
    t, h = outputs["train.jsonl"], outputs["heldout.jsonl"]
    print(f"train: {t['documents']} documents, {t['text_bytes']} bytes of text; held out: {h['documents']} "
          f"documents, {h['text_bytes']} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
