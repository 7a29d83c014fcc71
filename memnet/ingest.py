"""Turning user files into cube payloads: notes and JSON items -> plaintext, PEFT folders ->
parameter. Every problem is reported as one line naming the file and the place."""

from __future__ import annotations

import codecs
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memnet.cube import limits, payloads
from memnet.cube.payload_views import Spliced, Streamed
from memnet.errors import FormatError, UsageError
from memnet.files import write_atomic

MAX_INPUT_FILE = 256 * 1024 * 1024
READ_BLOCK = 1024 * 1024
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


CHAT_ROLES = ("system", "user", "assistant")


def _checked_size(path: Path, limit: int = MAX_INPUT_FILE) -> None:
    """A regular file of at most limit bytes (a device such as /dev/zero, a FIFO or a folder is
    refused before anything is read)."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file (a folder, device or pipe)")
    if path.stat().st_size > limit:
        raise UsageError(f"{path}: larger than {limit // 2**20} MiB")


def _read(path: Path, limit: int = MAX_INPUT_FILE) -> bytes:
    """A regular file's bytes, at most limit (a device such as /dev/zero, a FIFO or a folder is
    refused before anything is read; a file that grows while read is cut at the limit)."""
    _checked_size(path, limit)
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{path}: larger than {limit // 2**20} MiB")
    return data


class FileBytes:
    """A regular file read in place: len() and contiguous slices, each read with pread, so that
    an adapter's weights (up to gigabytes) go to the chunker in pieces and never whole into
    memory. A file that shrinks while it is read is one line, not a short payload."""

    _fd = -1  # until opened: close() (and __del__) of a refused path has nothing to do

    def __init__(self, path: Path):
        if not path.exists():
            raise UsageError(f"{path}: no such file")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise UsageError(f"{path}: not a regular file (a folder, device or pipe)")
        self.path, self._fd, self._size = path, fd, info.st_size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: slice) -> bytes:
        start, stop, step = index.indices(self._size)
        if step != 1:
            raise ValueError("only contiguous slices")
        if stop <= start:
            return b""
        data = os.pread(self._fd, stop - start, start)
        while len(data) < stop - start:
            more = os.pread(self._fd, stop - start - len(data), start + len(data))
            if not more:
                raise UsageError(f"{self.path}: changed while it was read (now shorter)")
            data += more
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def chat_messages(doc: Any, where: str) -> list[dict[str, str]]:
    """Chat messages as given: a non-empty list of {"role", "content"} with a known role."""
    if not isinstance(doc, list) or not doc or not all(
            isinstance(m, dict) and set(m) == {"role", "content"} and all(isinstance(v, str) for v in m.values())
            for m in doc):
        raise UsageError(f"{where}: expected a JSON list of {{\"role\": ..., \"content\": ...}} messages")
    for index, message in enumerate(doc):
        if message["role"] not in CHAT_ROLES:
            raise UsageError(f"{where}: message {index} has role {message['role'][:40]!r}; "
                             f"roles are {', '.join(CHAT_ROLES)}")
    return doc


def read_text(path: Path, limit: int = MAX_INPUT_FILE) -> str:
    """A user's UTF-8 text file, size-capped; every problem is one line naming the file."""
    try:
        return _read(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


def _item(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict) or not isinstance(value.get("text"), str) or not value["text"].strip():
        raise UsageError(f"{where}: an item must be a string or an object with a non-empty text")
    item: dict[str, Any] = {"text": value["text"]}
    meta = {k: v for k, v in value.items() if k != "text"}
    meta.update(meta.pop("meta", None) or {})
    if not all(isinstance(v, str) for v in meta.values()):
        raise UsageError(f"{where}: item fields other than text must be strings")
    if meta:
        item["meta"] = meta
    return item




def _text_blocks(path: Path) -> Iterator[str]:
    """A UTF-8 file's text in blocks of about READ_BLOCK, "\r\n" made "\n" (a "\r" at a
    block's end waits for the next block), at most MAX_INPUT_FILE bytes read."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    held, read = "", 0
    with path.open("rb") as handle:
        while True:
            data = handle.read(READ_BLOCK)
            read += len(data)
            if read > MAX_INPUT_FILE:
                raise UsageError(f"{path}: larger than {MAX_INPUT_FILE // 2**20} MiB")
            try:
                text = held + decoder.decode(data, final=not data)
            except UnicodeDecodeError:
                raise UsageError(f"{path}: not UTF-8 text") from None
            held = "\r" if text.endswith("\r") and data else ""
            text = text[:len(text) - len(held)].replace("\r\n", "\n")
            if text:
                yield text
            if not data:
                return


def _paragraphs(path: Path) -> Iterator[str]:
    """The notes of a text file, one per paragraph (blank-line separated, stripped), read a
    block at a time: the same items as splitting the whole text on "\n\n", one paragraph in
    memory at a time. A paragraph longer than an item may be is refused as soon as it is."""
    rest = ""
    for block in _text_blocks(path):
        parts = (rest + block).split("\n\n")
        rest = parts.pop()
        if len(rest) > limits.MAX_ITEM_TEXT:  # a char is at least a byte
            raise UsageError(f"{path}: a paragraph is longer than {limits.MAX_ITEM_TEXT // 1024} KiB "
                             "(separate notes with a blank line)")
        for part in parts:
            if part.strip():
                yield part.strip()
    if rest.strip():
        yield rest.strip()


def _jsonl_items(path: Path) -> Iterator[dict[str, Any]]:
    number, rest = 0, ""
    for block in _text_blocks(path):
        lines = (rest + block).split("\n")
        rest = lines.pop()
        if len(rest) > 4 * limits.MAX_ITEM_TEXT:
            raise UsageError(f"{path}:{number + 1}: a line is longer than {4 * limits.MAX_ITEM_TEXT // 2**20} MiB")
        for line in lines:
            number += 1
            if line.strip():
                yield _json_item(line, f"{path}:{number}")
    if rest.strip():
        yield _json_item(rest, f"{path}:{number + 1}")


def _json_item(line: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"{where}: invalid JSON ({exc})") from None
    return _item(value, where)


def _file_items(path: Path) -> Iterator[dict[str, Any]]:
    """.json: a list of items (parsed whole); .jsonl: one item per line; anything else: notes,
    one item per paragraph. An item is a string or {"text": ..., other string fields}."""
    if path.suffix == ".json":
        try:
            doc = json.loads(read_text(path))
        except ValueError as exc:
            raise UsageError(f"{path}: invalid JSON ({exc})") from None
        if not isinstance(doc, list):
            raise UsageError(f"{path}: expected a JSON list of items")
        for i in range(len(doc)):
            yield _item(doc[i], f"{path} item {i}")
            doc[i] = None   # what was yielded is the caller's to keep or drop
    elif path.suffix == ".jsonl":
        yield from _jsonl_items(path)
    else:
        yield from ({"text": p} for p in _paragraphs(path))


def plaintext_from_file(path: Path) -> tuple[Streamed, dict[str, Any]]:
    """A file's items as a plaintext payload that is never whole in memory: a first read checks
    every item and sizes the payload; the publish reads the file again, encoding an item at a
    time (a file changed in between is refused by the publish's own check)."""
    _checked_size(path)
    rules = payloads.ItemRules(embedded=False)
    count, size = 0, 0
    try:
        for item in _file_items(path):
            rules.check(count, item)
            count += 1
            size += payloads.item_size(item)
            rules.count(count, None)
    except FormatError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if not count:
        raise UsageError(f"{path}: holds no items")
    size += payloads.items_header_size(count)
    if size > limits.MAX_PLAINTEXT_PAYLOAD:
        raise UsageError(f"{path}: its items take {size // 2**20} MiB, a plaintext cube at most "
                         f"{limits.MAX_PLAINTEXT_PAYLOAD // 2**20} MiB")
    return Streamed(size, lambda: payloads.item_pieces(_file_items(path), count)), {"items": count}


def plaintext_payload(items: list[dict[str, Any]]) -> tuple[bytes, dict[str, Any]]:
    try:
        return payloads.encode_items(items), {"items": len(items)}
    except FormatError as exc:
        raise UsageError(str(exc)) from None


def adapter_from_dir(folder: Path, base_model: bytes) -> tuple[Spliced, dict[str, Any]]:
    """A PEFT adapter folder -> (parameter payload, meta). Pickle weights are refused. The
    payload is a view: the rewritten safetensors header, then the weights file read in pieces
    when the payload is sliced (a publish chunks it straight into the store)."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        if (folder / "adapter_model.bin").exists():
            raise UsageError(f"{folder}: adapter_model.bin is a pickle and is refused; "
                             "save the adapter with safe_serialization=True")
        raise UsageError(f"{folder}: no {ADAPTER_WEIGHTS}")
    try:
        config = json.loads(_read(folder / ADAPTER_CONFIG))
    except ValueError:
        raise UsageError(f"{folder / ADAPTER_CONFIG}: invalid JSON") from None
    if not isinstance(config, dict):
        raise UsageError(f"{folder / ADAPTER_CONFIG}: expected a JSON object")
    weights = FileBytes(folder / ADAPTER_WEIGHTS)
    try:
        meta = {"base_model": base_model, "peft": payloads.peft_summary(config)}
        payload = payloads.splice_parameter_payload(config, weights)
        payloads.validate_parameter(payload, meta)
    except FormatError as exc:
        raise UsageError(f"{folder}: {exc}") from None
    return payload, meta


def write_adapter_dir(payload: bytes, folder: Path) -> None:
    """Write a parameter payload back out as a PEFT adapter folder."""
    folder.mkdir(parents=True, exist_ok=True)
    config = payloads.peft_config_of(payload)
    write_atomic(folder / ADAPTER_WEIGHTS, payload)
    write_atomic(folder / ADAPTER_CONFIG, json.dumps(config, indent=2).encode() + b"\n")
