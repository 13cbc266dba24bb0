#!/usr/bin/env python3
"""Writes tests/eval/data/longbench-goldens.json: prediction files in LongBench's format, scored by THUDM/LongBench's
own eval.py and metrics.py, for tests/eval/test-longbench-goldens.cpp to compare `gsa score` against.

Nothing of LongBench is copied here: the script imports the reference's modules from a checkout at run time, runs
its eval.py as a program on the prediction files (the dataset scores, as eval.py writes them to result.json) and
records what its metric functions return for each sample (per-sample scores, in [0, 1]). The cases are
perturbations of real text: sentences of the Project Gutenberg books in ../shared/data/text/books (public domain),
the Chinese of LongBench's own README_ZH.md and task_zh.md, lines of Python's standard library, plus hand-written
Unicode edge cases. Run by hand (the test itself needs no Python):

    git -C LongBench-checkout archive 2e00731 LongBench | tar -x -C /tmp/lbref          # THUDM/LongBench
    git -C rouge-checkout archive 1.0.1 rouge | tar -x -C /tmp/lbref/rouge-1.0.1        # pltrdy/rouge (PyPI rouge)
    apt-get install python3-jieba python3-fuzzywuzzy python3-levenshtein python3-numpy python3-six
    /usr/bin/python3 tests/eval/make-longbench-goldens.py --longbench /tmp/lbref/LongBench \
        --rouge /tmp/lbref/rouge-1.0.1 --commit 2e00731 > tests/eval/data/longbench-goldens.json

Where gsa deliberately differs from that environment, a sample carries "gsa" (the score gsa must give) and "why":
  * "rouge-recursion": the rouge package recursed past Python's limit and LongBench's rouge_score returned 0.0; the
    "gsa" value is the same package's result with the recursion limit raised (the true ROUGE-L).
  * "levenshtein-tie": python-Levenshtein 0.12 (Debian 12's) computes fuzz.ratio's similarity as
    (lensum - dist) / lensum, python-Levenshtein >= 0.20 and thefuzz (rapidfuzz) as 1 - dist / lensum; on a few
    exact halves the two round to different integers. gsa follows the latter; the "gsa" value is computed from the
    indel distance the installed package reports (dist = lensum - round(ratio * lensum)).
The file's dataset score then carries "gsa_score" as well. The file also holds "jieba": jieba.cut(text) of some texts,
for the test to compare gsa's port of jieba (src/eval/jieba.h) token by token.
"""
import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import tempfile

import numpy as np

# eval.py's dataset2metric, by the metric functions' names (the generator checks it against eval.py's).
DATASET_METRIC = {
    "narrativeqa": "qa_f1_score", "qasper": "qa_f1_score", "multifieldqa_en": "qa_f1_score",
    "multifieldqa_zh": "qa_f1_zh_score", "hotpotqa": "qa_f1_score", "2wikimqa": "qa_f1_score",
    "musique": "qa_f1_score", "dureader": "rouge_zh_score", "gov_report": "rouge_score", "qmsum": "rouge_score",
    "multi_news": "rouge_score", "vcsum": "rouge_zh_score", "trec": "classification_score",
    "triviaqa": "qa_f1_score", "samsum": "rouge_score", "lsht": "classification_score",
    "passage_retrieval_en": "retrieval_score", "passage_count": "count_score",
    "passage_retrieval_zh": "retrieval_zh_score", "lcc": "code_sim_score", "repobench-p": "code_sim_score"}
E_DATASETS = ["qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec", "triviaqa",
              "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p"]

# The 50 fine question types of TREC (Li & Roth), as labels; LongBench's trec lists them in all_classes.
TREC_CLASSES = [
    "Abbreviation", "Expression abbreviated", "Animal", "Organ of body", "Color", "Invention, book and other "
    "creative piece", "Currency name", "Disease and medicine", "Event", "Food", "Musical instrument", "Language",
    "Letter like a-z", "Other entity", "Plant", "Product", "Religion", "Sport", "Element and substance",
    "Symbols and sign", "Techniques and method", "Equivalent term", "Vehicle", "Word with a special property",
    "Definition of something", "Description of something", "Manner of an action", "Reason", "Group or organization",
    "Individual", "Title of a person", "Description of a person", "City", "Country", "Mountain", "Other location",
    "State", "Postcode or other code", "Number of something", "Date", "Distance, linear measure", "Price",
    "Order, rank", "Other number", "Lasting time of somethin", "Percent, fraction", "Speed", "Temperature",
    "Size, area and volume", "Weight"]
# News categories in the style of LSHT's labels, with labels inside other labels ("足球" in "国际足球").
LSHT_CLASSES = ["农业、农村", "军事", "外交、国际关系", "体育", "足球", "国际足球", "中国足球", "教育", "财经",
                "股票", "经济", "文化、休闲娱乐", "科技", "医药、卫生", "法律、司法", "环境、气象", "交通",
                "政治", "社会、劳动", "旅游"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--longbench", required=True, help="LongBench/ folder of THUDM/LongBench (eval.py, metrics.py)")
    p.add_argument("--rouge", help="a pltrdy/rouge checkout to import `rouge` from, when it is not installed")
    p.add_argument("--commit", default="", help="the THUDM/LongBench commit the folder comes from, for the record")
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../../shared/data"),
                   help="the shared data folder (text/books)")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--random", type=int, default=8, metavar="N",
                   help="random perturbations per dataset (group 'random'); the committed file has 8, a larger N "
                        "makes a bigger comparison to run with GSA_LONGBENCH_GOLDENS=FILE")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------------------------
# Public text the answers come from.

def book_paragraphs(data):
    out = []
    folder = os.path.join(data, "text", "books")
    for name in sorted(os.listdir(folder)):
        text = open(os.path.join(folder, name), encoding="utf-8-sig").read()
        paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
        paras = [p for p in paras if len(p.split()) >= 25 and "Gutenberg" not in p and "*" not in p]
        out += paras[len(paras) // 10: len(paras) * 9 // 10]  # skip front and back matter
    return out


def sentences(paragraph):
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", paragraph) if len(s.split()) >= 4]


def chinese_sentences(longbench):
    out = []
    for name in ("README_ZH.md", "task_zh.md"):
        for line in open(os.path.join(longbench, name), encoding="utf-8"):
            line = re.sub(r"\[([^\]]*)\]\([^)]*\)|[*#>|`]", r"\1", line).strip()
            for s in re.split(r"(?<=[。！？])", line):
                if len(re.findall(r"[\u4e00-\u9fff]", s)) >= 8:
                    out.append(s.strip())
    return out


def code_lines():
    out = []
    stdlib = os.path.dirname(os.__file__)
    for name in ("textwrap.py", "difflib.py", "json/decoder.py", "csv.py", "fractions.py", "heapq.py"):
        for line in open(os.path.join(stdlib, name), encoding="utf-8"):
            line = line.rstrip("\n")
            if 12 <= len(line.strip()) and "#" not in line and '"""' not in line:
                out.append(line)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Cases: one prediction file is a list of {pred, answers, all_classes, length}.

def line(pred, answers, all_classes=None, length=0):
    return {"pred": pred, "answers": answers, "all_classes": all_classes, "length": length}


def spans(rng, paragraphs, n):
    """n answer-like spans: runs of capitalised words (names) or short word spans, with their sentence."""
    out = []
    while len(out) < n:
        s = rng.choice(sentences(rng.choice(paragraphs)) or ["x"])
        words = s.split()
        names = re.findall(r"(?:(?:Mr|Mrs|Miss|Dr)\. )?[A-Z][a-z]+(?: [A-Z][a-z]+)*", s)
        names = [x for x in names if x not in ("The", "I", "It", "He", "She", "But", "And", "A")]
        if names and rng.random() < 0.5:
            out.append((rng.choice(names), s))
        elif len(words) >= 6:
            i = rng.randrange(len(words) - 4)
            out.append((" ".join(words[i:i + rng.randint(1, 4)]).strip(",;:"), s))
    return out


def qa_cases(rng, paragraphs, first_line):
    cases = []
    picked = spans(rng, paragraphs, 16)
    for k, (ans, sent) in enumerate(picked):
        other = picked[(k + 1) % len(picked)][0]
        words = ans.split()
        variants = [
            ans, ans.upper(), "The " + ans + ".", sent, " ".join(words[1:]) or ans.lower(), ans + " " + ans,
            " ".join(reversed(words)), "\n\n" + ans + "\nBecause: " + sent, other, "An " + ans + ", of course",
            ans.replace(" ", "\u00a0"), ans.replace(" ", "\t"), ans[:1] + "-" + ans[1:],
            "Answer: " + ans.lower() + "\n" + other,
        ]
        pred = variants[k % len(variants)] if k < len(variants) else rng.choice(variants)
        answers = [ans] if k % 3 else [other, ans, sent.split()[0]]
        cases.append(line(pred, answers))
    cases += [line("", [picked[0][0]]), line(" \n\t ", [picked[1][0]]), line("x", []),
              line(picked[2][0], [picked[2][0], picked[2][0].lower()])]
    if first_line:
        cases += [line("\n\n\n" + picked[3][0] + "\n" + picked[4][0], [picked[4][0]]),
                  line("\r\n" + picked[5][0], [picked[5][0]])]
    return cases


# Python's Unicode semantics in normalize_answer: lowercase of every script, \b around a/an/the, str.split().
QA_UNICODE = [
    ("ŁAZIENKI PARK", ["Łazienki Park"]), ("ΒΑΣΚΑΝΊΑ", ["βασκανία"]), ("ΟΔΟΣ", ["οδος", "οδος".upper()]),
    ("ΟΔΟΣ ΣΑΣ.", ["οδος σας"]), ("İSTANBUL", ["istanbul"]), ("STRASSE", ["Straße"]), ("МОСКВА", ["москва"]),
    ("ᎠᏍᎦᏯ", ["ꭰꮝꮶꮿ"]), ("ᲗᲑᲘᲚᲘᲡᲘ", ["თბილისი"]), ("𐐔𐐯𐑅𐐨𐑉𐐯𐐻", ["𐐼𐐯𐑅𐐨𐑉𐐯𐐻"]), ("ＰＡＲＩＳ", ["ｐａｒｉｓ"]),
    ("ǅivko", ["ǆivko"]), ("Ⅻ Olympiad", ["ⅻ olympiad"]), ("the€ cat", ["€ cat"]), ("thé cat", ["cat"]),
    ("the\u0301 cat", ["cat"]), ("a\u200bcat", ["cat"]), ("the① cat", ["cat"]), ("the٣ x", ["x"]),
    ("the_cat", ["cat"]), ("an\u00adcat", ["cat"]), ("the’s cat", ["s cat"]), ("THE\u3000CAT", ["cat"]),
    ("café", ["cafe\u0301"]), ("café au lait", ["café"]), ("the🙂 cat", ["🙂 cat"]), ("Ⓐ Ⓑ", ["ⓐ ⓑ"]),
    ("x\x1cy\x85z\u2028w", ["x y z w"]), ("x\u200by", ["x y"]), ("x\u180ey", ["x y"]), ("x\ufeffy", ["xy"]),
    ("ΣΑΣ\u0301 b", ["σας\u0301 b"]), ("ﬃ THE", ["ﬃ"]), ("A\u0308PFEL", ["äpfel"]), ("ÄPFEL", ["äpfel"]),
]


def rouge_cases(rng, paragraphs, first_line):
    cases = []
    for k in range(14):
        para = rng.choice([p for p in paragraphs if len(sentences(p)) >= 3])
        ref = " ".join(sentences(para)[:rng.randint(2, 3)])
        sents = sentences(ref)
        words = ref.split()
        variants = [
            ref, " ".join(sents[: max(1, len(sents) // 2)]), " ".join(reversed(sents)),
            " ".join(w for i, w in enumerate(words) if i % 5 != 2), ref.lower(), ref.replace(".", ""),
            ref.replace(". ", "... . "), " ".join(words[: len(words) // 3]) + " " + rng.choice(paragraphs)[:120],
            "\u3000".join(words), "\u00a0 ".join(words), "\u200b".join(words[:8]), ref + " " + ref,
            ref.replace(" ", " 3.5 ", 1), "\n" + sents[-1] + "\n" + sents[0],
        ]
        cases.append(line(variants[k], [ref] if k % 4 else [rng.choice(paragraphs)[:150], ref]))
    ref = " ".join(sentences(paragraphs[7])[:3])
    cases += [line("", [ref]), line(".", [ref]), line(" . . ", [ref]), line(" ", [ref]), line("...", ["..."]),
              line(ref, [" "]), line("No.", ["No"]), line("x", [])]
    if first_line:
        cases += [line("\n\nA short summary line.\nAnd a second line.", ["A short summary line."])]
    return cases


def trec_cases(rng):
    cases = []
    for k in range(18):
        gt = rng.choice(TREC_CLASSES)
        other = rng.choice(TREC_CLASSES)
        variants = [gt, "Type: " + gt, gt.lower(), gt + " or " + other, "\n" + gt + "\n" + other,
                    other, "The answer is " + gt + ".", "", gt.upper(), other + "\n" + gt]
        cases.append(line(variants[k % len(variants)], [gt], TREC_CLASSES))
    # Labels inside other labels: "Other number" holds "Other", "Description of something" holds "Description".
    classes = TREC_CLASSES + ["Other", "Description", "Number"]
    cases += [line("Number of something or Other number", ["Other number"], classes),
              line("Description, Description of something", ["Description of something"], classes),
              line("Other location", ["Other"], classes), line("Number", ["Number of something"], classes),
              line("Number Other Description", ["Number"], classes)]
    return cases


def lsht_cases(rng):
    cases = []
    for k in range(12):
        gt = rng.choice(LSHT_CLASSES)
        other = rng.choice(LSHT_CLASSES)
        variants = [gt, "类别：" + gt, gt + "或" + other, "\n" + gt + "\n" + other, other, "", gt + "新闻"]
        cases.append(line(variants[k % len(variants)], [gt], LSHT_CLASSES))
    cases += [line("国际足球", ["足球"], LSHT_CLASSES), line("足球、国际足球", ["国际足球"], LSHT_CLASSES),
              line("中国足球和国际足球", ["中国足球"], LSHT_CLASSES)]
    return cases


def retrieval_cases(rng, zh):
    cases = []
    for k in range(14):
        n, m = rng.randint(1, 30), rng.randint(1, 30)
        gt = ("段落%d" if zh else "Paragraph %d") % n
        variants = [gt, ("答案是段落%d。" if zh else "The answer is Paragraph %d.") % n, str(m),
                    "%d and %d" % (n, m), gt.replace(str(n), "".join(chr(0xFF10 + int(c)) for c in str(n))),
                    gt.replace(str(n), "".join(chr(0x0660 + int(c)) for c in str(n))), "",
                    gt + " (%d%%)" % m, gt.replace(str(n), "0" + str(n)), gt + "\u200b" + str(m),
                    "Paragraph %d²" % n, "第%d段" % n, gt.replace(str(n), "".join(chr(0x1D7CE + int(c)) for c in str(n))),
                    "①" + gt]
        cases.append(line(variants[k], [gt]))
    return cases


def count_cases(rng):
    cases = []
    for k in range(14):
        n = rng.randint(1, 40)
        variants = [str(n), "There are %d unique paragraphs." % n, "%d or %d" % (n, n + 1), "seventeen",
                    "".join(chr(0xFF10 + int(c)) for c in str(n)), "".join(chr(0x0966 + int(c)) for c in str(n)),
                    "", " ".join(str(n)), "%d, %d, %d" % (n, n, n + 2), "%d.0" % n, "0%d" % n, "-%d" % n,
                    "%d\u200b%d" % (n, n), "%d%d" % (n, n)]
        cases.append(line(variants[k], [str(n)]))
    return cases


def levenshtein_tie_pairs(lines):
    """Prediction lines whose similarity to a 40-character real line hits an exact half: lensum 80 with indel
    distance 46, 74 or 78 (common subsequence 17, 3, 1)."""
    out = []
    gts = [x for x in lines if len(x) == 40 and not any(c in x for c in ("ж", "`", "#", "//"))]
    for gt, keep in zip(gts, (17, 3, 1)):
        out.append((gt[:keep] + "ж" * (40 - keep), gt))
    return out


def code_cases(rng, lines):
    cases = []
    for k in range(16):
        gt = rng.choice(lines)
        nxt = rng.choice(lines)
        edited = list(gt)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(edited))
            edited[i] = rng.choice("abcxyz_ ().")
        edited = "".join(edited)
        variants = [gt, "\n\n" + gt, "```python\n" + gt + "\n```", "# the next line\n" + gt, "// next\n" + gt,
                    edited, gt[: len(gt) // 2], nxt, "", gt + "\n" + nxt, 'x = "#"\n' + gt, "# only\n// lines",
                    gt.strip(), gt.replace("    ", "\t"), gt + "  # é中文🙂", "\n" + gt.replace("e", "é")]
        cases.append(line(variants[k], [gt] if k % 5 else [nxt, gt]))
    cases += [line(p, [g]) for p, g in levenshtein_tie_pairs(lines)]
    cases += [line("print('中文🙂')", ["print('中文')"]), line("s = 'e\u0301'", ["s = 'é'"]), line("x", ["x"])]
    return cases


def zh_qa_cases(rng, zh):
    cases = []
    for k in range(14):
        s = rng.choice(zh)
        i = rng.randrange(max(1, len(s) - 8))
        ans = s[i:i + rng.randint(2, 8)]
        variants = [ans, s, "答案：" + ans + "。", ans.upper(), ans + ans, ans[1:], "", "“" + ans + "”",
                    " ".join(ans), ans + "\u3000" + s[:5], ans.replace("的", ""), rng.choice(zh)[:10],
                    "\n" + ans + "\n其他", ans + "LongBench 3.5%"]
        cases.append(line(variants[k], [ans] if k % 3 else [s[:4], ans]))
    cases += [line("ＡＢＣ与abc", ["abc与ABC"]), line("（北京）！", ["北京"]), line("x", [])]
    return cases


def zh_rouge_cases(rng, zh):
    cases = []
    for k in range(10):
        i = rng.randrange(len(zh) - 4)
        ref = "".join(zh[i:i + rng.randint(1, 3)])
        variants = [ref, ref[: len(ref) // 2], ref[::-1], ref.replace("，", ""), "".join(zh[i + 3:i + 5]),
                    ref + "。" + ref, ref.replace("。", "."), "", ref.replace("的", " "), ref.upper()]
        cases.append(line(variants[k], [ref]))
    cases += [line("...", ["。。。"]), line("会议 讨论了 预算.", ["会议讨论了预算。"])]
    return cases


# Pieces a random perturbation inserts: spaces of every kind, format and combining characters, punctuation (ASCII
# and CJK), articles, letters whose case Python maps specially, digits of other scripts, code markers.
PALETTE = [" ", "  ", "\t", "\n", "\u00a0", "\u3000", "\u2028", "\x1c", "\x85", "\u200b", "\u200d", "\ufeff",
           "\u180e", "\u0301", "\u0308", ".", ",", "!", "-", "'", '"', "’", "“", "。", "，", "、", "the", "The", "a",
           "an", "A", "AN", " the ", " a ", "İ", "ß", "Σ", "ς", "ǅ", "Ⅻ", "①", "²", "٣", "３", "𝟏", "७", "0", "7",
           "12", "Paragraph ", "段落", "€", "🙂", "_", "#", "`", "//", "ＡＢ", "Ꭰ", "Ა", "𐐀", "中", "的", "了",
           "LongBench", "3.5", "%"]


def perturb(rng, text):
    for _ in range(rng.randint(1, 4)):
        words = text.split(" ")
        op = rng.randrange(8)
        i = rng.randint(0, len(text))
        if op <= 1:
            text = text[:i] + rng.choice(PALETTE) + text[i:]
        elif op == 2 and text:
            text = text[:i] + text[i + 1:]
        elif op == 3:
            k = rng.randrange(len(words))
            text = " ".join(words[:k] + [words[k].upper()] + words[k + 1:])
        elif op == 4:
            text = text.lower()
        elif op == 5:
            k = rng.randrange(len(words))
            text = " ".join(words[:k + 1] + words[k:])
        elif op == 6:
            text = text[:i] if rng.random() < 0.5 else text[i:]
        else:
            k = rng.randrange(len(words))
            text = " ".join(words[:k] + [rng.choice(PALETTE)] + words[k + 1:])
    return text


def random_group(rng, n, paragraphs, zh, code):
    """n random perturbations of real answers per dataset."""
    def en_span():
        return spans(rng, paragraphs, 1)[0][0]

    def en_summary():
        return " ".join(sentences(rng.choice([p for p in paragraphs if len(sentences(p)) >= 2]))[:2])

    def zh_span():
        s = rng.choice(zh)
        i = rng.randrange(max(1, len(s) - 6))
        return s[i:i + rng.randint(2, 10)]

    answer = {"qa_f1_score": en_span, "rouge_score": en_summary, "qa_f1_zh_score": zh_span,
              "rouge_zh_score": lambda: "".join(rng.sample(zh, 2)), "code_sim_score": lambda: rng.choice(code),
              "retrieval_score": lambda: "Paragraph %d" % rng.randint(1, 30),
              "retrieval_zh_score": lambda: "段落%d" % rng.randint(1, 30), "count_score": lambda: str(rng.randint(1, 40))}
    files = {}
    for dataset, metric in DATASET_METRIC.items():
        lines = []
        for _ in range(n):
            if metric == "classification_score":
                classes = TREC_CLASSES if dataset == "trec" else LSHT_CLASSES
                gt = rng.choice(classes)
                lines.append(line(perturb(rng, gt + rng.choice(["", " ", "\n"]) + rng.choice(classes)), [gt], classes))
                continue
            gts = [answer[metric]() for _ in range(rng.randint(1, 2))]
            if metric in ("qa_f1_score", "qa_f1_zh_score", "rouge_score", "rouge_zh_score") and rng.random() < 0.3:
                gts = [perturb(rng, g) for g in gts]
            lines.append(line(perturb(rng, rng.choice(gts)), gts))
        files[dataset] = lines
    return files


JIEBA_TEXTS = [
    "", " ", "\r\n", "a\r\n\rb\n", "C++和AT&T的c#代码", "3.14159和50%的人", "版本1.2.3、v2.0beta与x86_64",
    "ＡＢＣ全角与abc半角", "北京大学生前来应聘", "他来到了网易杭研大厦", "小明硕士毕业于中国科学院计算所，后在日本京都大学深造",
    "我们在野生动物园玩", "结过婚的和尚未结过婚的", "「引号」《书名》【括号】", "emoji🙂表情😀", "零宽\u200b字符\u3000全角空格",
    "中文English混合mixed文本text", "－连字符-hyphen—破折号", "１２３４全角数字１２３", "龟兔赛跑：乌龟慢慢地爬，兔子飞快地跑。",
    "南京市长江大桥", "工信处女干事每月经过下属科室都要亲口交代24口交换机等技术性器件的安装工作", "李小福是创新办主任也是云计算方面的专家",
    "葛優與鞏俐在電影中飾演夫妻", "ㄅㄆㄇㄈ注音", "𠀀𠀁扩展B区", "\u9fd6\u9fff边界外", "\u4e00\u9fd5边界内",
]


def base_group(rng, paragraphs, zh, code):
    files = {}
    qa = ["narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "triviaqa"]
    for i, d in enumerate(qa):
        files[d] = qa_cases(rng, paragraphs, d == "triviaqa")
        files[d] += [line(p, a) for p, a in QA_UNICODE[i::len(qa)]]
    for d in ("gov_report", "qmsum", "multi_news", "samsum"):
        files[d] = rouge_cases(rng, paragraphs, d == "samsum")
    files["trec"] = trec_cases(rng)
    files["lsht"] = lsht_cases(rng)
    files["passage_retrieval_en"] = retrieval_cases(rng, False)
    files["passage_retrieval_zh"] = retrieval_cases(rng, True)
    files["passage_count"] = count_cases(rng)
    files["lcc"] = code_cases(rng, code)
    files["repobench-p"] = code_cases(rng, code)
    files["multifieldqa_zh"] = zh_qa_cases(rng, zh)
    files["dureader"] = zh_rouge_cases(rng, zh)
    files["vcsum"] = zh_rouge_cases(rng, zh)
    for lines in files.values():
        for x in lines:
            x["length"] = rng.randint(500, 20000)
    return files


def numpy_round_split():
    """A count score k/m whose LongBench-E bucket score rounds differently in numpy (rint(x * 100) / 100) and
    Python (correctly rounded), so the test sees which of the two gsa applies. 100 k/m must lie near an odd
    multiple of 0.005 that no double holds exactly, which needs m = 4000."""
    m = 4000
    for k in range(1, m, 2):
        x = 100 * np.mean([k / m])
        if round(x, 2) != round(float(x), 2):
            return k, m
    raise RuntimeError("no k/m found")


def e_group(rng, paragraphs, code):
    files = {}
    makers = {"trec": lambda: trec_cases(rng), "passage_count": lambda: count_cases(rng),
              "passage_retrieval_en": lambda: retrieval_cases(rng, False), "lcc": lambda: code_cases(rng, code),
              "repobench-p": lambda: code_cases(rng, code)}
    for d in E_DATASETS:
        if d in makers:
            lines = makers[d]()
        elif d in ("gov_report", "multi_news", "samsum"):
            lines = rouge_cases(rng, paragraphs, d == "samsum")
        else:
            lines = qa_cases(rng, paragraphs, d == "triviaqa")
        edges = [0, 3999, 4000, 7999, 8000, 123456]
        for i, x in enumerate(lines):
            x["length"] = edges[i] if i < len(edges) else rng.randint(0, 12000)
        files[d] = lines
    for x in files["trec"]:  # no 8k+ predictions: numpy's mean of an empty bucket is NaN
        x["length"] = min(x["length"], 7999)
    # Past 128 values in one bucket numpy's pairwise summation recurses.
    files["passage_count"] += [line(str(rng.randint(1, 9)) * rng.randint(1, 2), [str(rng.randint(1, 9))],
                                    length=rng.randint(4000, 7999)) for _ in range(300)]
    return files


def zh_punctuation_group():
    """Which characters normalize_zh_answer drops: one prediction per punctuation-like character, after a word."""
    ranges = [(0x21, 0x7E), (0x2010, 0x205E), (0x3000, 0x303F), (0xFE30, 0xFE6B), (0xFF01, 0xFF65)]
    chars = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1) if not chr(c).isalnum()]
    return {"multifieldqa_zh": [line("北京" + c, ["北京"]) for c in chars]}


def e_rounding_group():
    """One 8k+ prediction scoring k/m where numpy's and Python's rounding of the bucket score split."""
    k, m = numpy_round_split()
    return {"passage_count": [line(" ".join(["7"] * k + ["8"] * (m - k)), ["7"], length=20000),
                              line("3", ["3"], length=10), line("3 4", ["4"], length=5000)]}


def classes_group():
    """eval.py scores every line with the all_classes of the file's last line."""
    t = [line("Food", ["Food"], ["Food", "Date"]), line("Date and City", ["City"], ["City"]),
         line("Sport", ["Sport"], ["Food", "Sport", "City", "Date"])]
    s = [line("体育", ["体育"], ["体育"]), line("军事", ["军事"], ["军事", "体育"])]
    return {"trec": t, "lsht": s}


def recursion_group(paragraphs, zh):
    """Single sentences of over a thousand words: the rouge package's recursive LCS walk passes Python's limit."""
    words = " ".join(paragraphs[100:160]).replace(".", "").split()
    ref = " ".join(words[:1400])
    pred = " ".join(w for i, w in enumerate(words[:1500]) if i % 7 != 3)
    short = " ".join(sentences(paragraphs[5])[:2])
    files = {"gov_report": [line(pred, [ref]), line(short, [short]), line(ref[:2000], [ref])],
             "qmsum": [line(short, [short + " " + short])]}
    text = "".join(zh).replace(".", "")[:2000]
    files["vcsum"] = [line(text[:1300] + text[-400:], [text]), line(zh[0], [zh[0]])]
    return files


# ---------------------------------------------------------------------------------------------------------------
# The reference.

class Reference:
    def __init__(self, longbench):
        sys.path.insert(0, longbench)
        spec = importlib.util.spec_from_file_location("longbench_eval", os.path.join(longbench, "eval.py"))
        self.eval = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.eval)  # imports LongBench's metrics.py
        import metrics
        self.metrics = metrics
        self.longbench = longbench
        self.recursion = False
        real_rouge = metrics.Rouge

        outer = self

        class FlaggingRouge(real_rouge):  # notes a RecursionError that rouge_score's bare except hides
            def get_scores(self, *a, **k):
                try:
                    return super().get_scores(*a, **k)
                except RecursionError:
                    outer.recursion = True
                    raise
        metrics.Rouge = FlaggingRouge
        assert {d: f.__name__ for d, f in self.eval.dataset2metric.items()} == DATASET_METRIC
        self.fuzz = metrics.fuzz
        self.ties = False
        self.difflib_splits = [0, 0]

    def rapidfuzz_ratio(self, s1, s2):
        """fuzz.ratio as python-Levenshtein >= 0.20 / thefuzz compute it: 100 * (1 - dist / lensum), rounded."""
        import difflib
        import Levenshtein
        real = self.fuzz.ratio(s1, s2)
        if s1 == s2 or not s1 or not s2:
            return real
        lensum = len(s1) + len(s2)
        dist = lensum - round(Levenshtein.ratio(s1, s2) * lensum)
        alt = int(round(100 * (1.0 - dist / lensum)))
        self.ties = self.ties or alt != real
        self.difflib_splits[0] += 1
        self.difflib_splits[1] += int(round(100 * difflib.SequenceMatcher(None, s1, s2).ratio())) != real
        return alt

    def per_sample(self, dataset, lines, e, gsa_mode):
        """eval.py's scorer (or scorer_e) on the file, with each metric call recorded: a sample's score is the best
        of its calls and 0. Returns (dataset score, per-sample scores, per-sample flags)."""
        calls = []
        metric = self.eval.dataset2metric[dataset]

        def recording(prediction, ground_truth, **kw):
            self.recursion = self.ties = False
            s = metric(prediction, ground_truth, **kw)
            calls.append((s, self.recursion, self.ties))
            return s
        self.eval.dataset2metric[dataset] = recording
        limit = sys.getrecursionlimit()
        if gsa_mode:
            sys.setrecursionlimit(100000)
            self.metrics.fuzz = type("fuzz", (), {"ratio": staticmethod(self.rapidfuzz_ratio)})
        try:
            args = ([x["pred"] for x in lines], [x["answers"] for x in lines])
            if e:
                total = self.eval.scorer_e(dataset, *args, [x["length"] for x in lines], lines[-1]["all_classes"])
            else:
                total = self.eval.scorer(dataset, *args, lines[-1]["all_classes"])
        finally:
            self.eval.dataset2metric[dataset] = metric
            sys.setrecursionlimit(limit)
            self.metrics.fuzz = self.fuzz
        scores, flags, k = [], [], 0
        for x in lines:
            mine = calls[k:k + len(x["answers"])]
            k += len(x["answers"])
            scores.append(max([0.0] + [c[0] for c in mine]))
            flags.append(("rouge-recursion" if any(c[1] for c in mine) else "") or
                         ("levenshtein-tie" if any(c[2] for c in mine) else ""))
        return total, scores, flags

    def run_eval_py(self, files, e, env):
        """LongBench's eval.py as a program on a folder of prediction files: its result.json."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = os.path.join(tmp, "pred_e" if e else "pred", "goldens")
            os.makedirs(folder)
            for dataset, lines in files.items():
                with open(os.path.join(folder, dataset + ".jsonl"), "w", encoding="utf-8") as f:
                    for x in lines:
                        f.write(json.dumps(x, ensure_ascii=False) + "\n")  # as pred.py writes them
            run = subprocess.run([sys.executable, os.path.join(self.longbench, "eval.py"), "--model", "goldens"] +
                                 (["--e"] if e else []), cwd=tmp, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                return None, run.stderr.strip().splitlines()[-1]
            return json.load(open(os.path.join(folder, "result.json"))), None


def levenshtein_version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("python-Levenshtein")
    except PackageNotFoundError:
        return version("Levenshtein")


def score_json(x):
    if isinstance(x, dict):
        return {k: score_json(v) for k, v in x.items()}
    return None if x != x else float(x)  # NaN (an empty LongBench-E bucket) -> null


def main():
    args = parse_args()
    if args.rouge:
        sys.path.insert(0, args.rouge)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [args.rouge, os.environ.get("PYTHONPATH")] if p))
    rng = random.Random(args.seed)
    paragraphs = book_paragraphs(args.data)
    zh = chinese_sentences(args.longbench)
    code = code_lines()
    with contextlib.redirect_stdout(sys.stderr):
        ref = Reference(args.longbench)
    groups = [("base", False, base_group(rng, paragraphs, zh, code)),
              ("longbench-e", True, e_group(rng, paragraphs, code)),
              ("longbench-e-rounding", True, e_rounding_group()),
              ("last-line-classes", False, classes_group()),
              ("zh-punctuation", False, zh_punctuation_group()),
              ("null-classes", False, {"trec": [line("Food", ["Food"], ["Food"]), line("Food", ["Food"], None)]}),
              ("rouge-recursion", False, recursion_group(paragraphs, zh)),
              ("random", False, random_group(rng, args.random, paragraphs, zh, code))]
    out_files = []
    for name, e, files in groups:
        printed, error = ref.run_eval_py(files, e, env)
        for dataset, lines in files.items():
            entry = {"group": name, "dataset": dataset, "e": e, "lines": lines}
            if error:
                entry["error"] = error
                out_files.append(entry)
                continue
            total, scores, flags = ref.per_sample(dataset, lines, e, gsa_mode=False)
            assert score_json(total) == score_json(printed[dataset]), (name, dataset, total, printed[dataset])
            entry["score"] = score_json(printed[dataset])
            entry["per_sample"] = scores
            gsa_total, gsa_scores, gsa_flags = ref.per_sample(dataset, lines, e, gsa_mode=True)
            differ = {i: (gsa_scores[i], flags[i] or gsa_flags[i]) for i in range(len(lines))
                      if gsa_scores[i] != scores[i]}
            assert all(why for _, why in differ.values()), (name, dataset, differ)
            if differ:
                entry["gsa"] = {str(i): {"score": s, "why": why} for i, (s, why) in differ.items()}
                entry["gsa_score"] = score_json(gsa_total)
            out_files.append(entry)
    lb_hash = {n: hashlib.sha256(open(os.path.join(args.longbench, n), "rb").read()).hexdigest()[:16]
               for n in ("eval.py", "metrics.py")}
    import fuzzywuzzy
    import jieba
    import rouge
    doc = {
        "generator": "tests/eval/make-longbench-goldens.py (see its header for the deliberate differences)",
        "reference": {"longbench": "THUDM/LongBench %s LongBench/eval.py, metrics.py" % args.commit,
                      "sha256": lb_hash, "python": sys.version.split()[0], "numpy": np.__version__,
                      "rouge": rouge.__version__, "jieba": jieba.__version__, "fuzzywuzzy": fuzzywuzzy.__version__,
                      "python-Levenshtein": levenshtein_version()},
        "files": out_files,
    }
    import jieba as jieba_module
    texts = JIEBA_TEXTS + zh
    doc["jieba"] = [[t, list(jieba_module.cut(t, cut_all=False))] for t in texts]
    n = sum(len(f["lines"]) for f in out_files)
    print("%d files, %d predictions; %d samples where gsa differs; code_sim: %d of %d fuzz.ratio calls would "
          "differ under fuzzywuzzy's difflib fallback" % (len(out_files), n, sum(len(f.get("gsa", {})) for f in
          out_files), ref.difflib_splits[1], ref.difflib_splits[0]), file=sys.stderr)
    # One prediction line per text line, so that a diff of two runs reads case by case.
    files = doc.pop("files")
    entries = []
    for f in files:
        lines = ",\n  ".join(json.dumps(x, ensure_ascii=True) for x in f["lines"])
        rest = json.dumps({k: v for k, v in f.items() if k != "lines"}, ensure_ascii=True)
        entries.append('{"lines": [\n  ' + lines + "],\n " + rest[1:])
    cuts = doc.pop("jieba")
    sys.stdout.write(json.dumps(doc, ensure_ascii=True)[:-1] + ',\n"jieba": [\n' +
                     ",\n".join(json.dumps(c, ensure_ascii=True) for c in cuts) + '],\n"files": [\n' +
                     ",\n".join(entries) + "\n]}\n")


if __name__ == "__main__":
    main()
