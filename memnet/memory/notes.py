"""Notes files -> plaintext items.

Markdown (and plain text): one item per paragraph (blank-line separated), headings start a new
section and are not items themselves; each item keeps its heading path as meta "section"
("Setup > Linux"). Fenced code stays whole. A paragraph longer than ITEM_CHARS is split at
sentence (or line) boundaries: the embedder reads only ~256 word pieces of a text, so the rest of
a longer item could never be recalled.
JSON lines: one {"text": str, "meta": {str: str}} per line ("meta" optional).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from memnet import ingest
from memnet.cube import limits
from memnet.errors import UsageError

ITEM_CHARS = 1000
MAX_NOTES_FILE = 64 * 1024 * 1024

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_BOUNDARY = re.compile(r"((?<=[.!?])\s+|\n)")


def items_from_path(path: Path) -> list[dict[str, Any]]:
    """The items of a notes file: .jsonl is JSON lines, anything else Markdown / plain text."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        raise UsageError(f"{path}: notes in JSON go one object per line in a .jsonl file")
    text = ingest.read_text(path, MAX_NOTES_FILE)
    items = parse_jsonl(text, str(path)) if suffix == ".jsonl" else parse_markdown(text)
    if not items:
        raise UsageError(f"{path}: holds no notes")
    if len(items) > limits.MAX_PLAINTEXT_ITEMS:
        raise UsageError(f"{path}: {len(items)} notes, a cube holds at most {limits.MAX_PLAINTEXT_ITEMS}; "
                         "split the file")
    return items


# -- Markdown ------------------------------------------------------------------------------------

def _skip_front_matter(lines: list[str]) -> list[str]:
    if lines and lines[0].strip() == "---":
        for end in range(1, len(lines)):
            if lines[end].strip() in ("---", "..."):
                return lines[end + 1:]
    return lines


def parse_markdown(text: str, max_chars: int = ITEM_CHARS) -> list[dict[str, Any]]:
    lines = _skip_front_matter(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    headings: list[tuple[int, str]] = []
    items: list[dict[str, Any]] = []
    para: list[str] = []
    fence = ""

    def section() -> str:
        return " > ".join(title for _, title in headings if title)

    def flush() -> None:
        body = "\n".join(para).strip()
        para.clear()
        if body:
            where = section()
            for piece in split_text(body, max_chars):
                items.append({"text": piece, "meta": {"section": where}} if where else {"text": piece})

    def enter(level: int, title: str) -> None:
        while headings and headings[-1][0] >= level:
            headings.pop()
        headings.append((level, title.strip()))

    for line in lines:
        if fence:  # inside fenced code: blank lines and '#' lines are code
            para.append(line)
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = ""
            continue
        if m := _FENCE.match(line):
            fence = m.group(1)
            para.append(line)
        elif m := _HEADING.match(line):
            flush()
            enter(len(m.group(1)), m.group(2) or "")
        elif _SETEXT.match(line) and len(para) == 1 and not _RULE.match(para[0]):
            title = para.pop()
            enter(1 if line.strip()[0] == "=" else 2, title)
        elif _RULE.match(line) or not line.strip():
            flush()
        else:
            para.append(line)
    flush()
    return items


def split_text(text: str, max_chars: int = ITEM_CHARS) -> list[str]:
    """Pieces of at most max_chars, cut at sentence or line ends where possible, else at spaces,
    else anywhere."""
    if len(text) <= max_chars:
        return [text]
    parts = _BOUNDARY.split(text)  # [sentence, separator, sentence, ...]
    pieces: list[str] = []
    current = ""
    for i in range(0, len(parts), 2):
        sentence, sep = parts[i], parts[i - 1] if i else ""
        if current and len(current) + len(sep) + len(sentence) <= max_chars:
            current += sep + sentence
            continue
        if current.strip():
            pieces.append(current.strip())
        current = sentence
        if len(current) > max_chars:
            words = _pack(current.split(" "), max_chars)
            pieces += words[:-1]
            current = words[-1] if words else ""
    if current.strip():
        pieces.append(current.strip())
    return pieces


def _pack(words: list[str], max_chars: int) -> list[str]:
    out: list[str] = []
    current = ""
    for word in words:
        while len(word) > max_chars:  # one "word" longer than an item: cut it
            if current:
                out.append(current)
                current = ""
            out.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) <= max_chars:
            current += " " + word
        else:
            if current:
                out.append(current)
            current = word
    if current:
        out.append(current)
    return [piece for piece in (p.strip() for p in out) if piece]


# -- JSON lines ----------------------------------------------------------------------------------

def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _utf8(value: str, where: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(f"{where}: text is not valid Unicode (lone surrogate)") from None


def parse_jsonl(text: str, source: str = "notes") -> list[dict[str, Any]]:
    items = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            value = json.loads(line, object_pairs_hook=_object)
        except ValueError as exc:
            raise UsageError(f"{where}: invalid JSON ({exc})") from None
        if not isinstance(value, dict) or "text" not in value or not set(value) <= {"text", "meta"}:
            raise UsageError(f'{where}: expected {{"text": "...", "meta": {{...}}}} ("meta" optional)')
        body, meta = value["text"], value.get("meta", {})
        if not isinstance(body, str) or not body.strip():
            raise UsageError(f"{where}: text must be a non-empty string")
        if _utf8(body, where) > limits.MAX_ITEM_TEXT:
            raise UsageError(f"{where}: text is longer than {limits.MAX_ITEM_TEXT} bytes")
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise UsageError(f"{where}: meta must map names to strings")
        for key, val in meta.items():
            _utf8(key + val, where)
        items.append({"text": body, "meta": meta} if meta else {"text": body})
    return items
