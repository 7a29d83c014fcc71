"""Stop sequences over streamed text (pure): what may be shown of an answer so far, holding back
a tail that could still become a stop sequence (or is half a UTF-8 character), and whether a
stop sequence has appeared (the answer then ends just before it, as OpenAI's API does).

    stops = StopText(["\\n\\n", "END"])
    delta, stopped = stops.feed("Hello wor")      # the whole answer so far each time
    tail = stops.flush()                          # at the end: what was held back
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"  # what a decoder shows for a character whose bytes have not all come


class StopText:
    def __init__(self, stops: list[str] | tuple[str, ...] = ()):
        self.stops = [s for s in stops if s]
        self.shown = ""      # text handed out so far
        self.text = ""       # the answer up to the stop (or all of it)
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        """text: the whole answer so far. Returns (new text to show, whether a stop was hit)."""
        if self.stopped:
            return "", True
        # the stop sequence completed first ends the answer (as it would have while streaming,
        # whatever the token boundaries): the earliest end, then the earliest start
        found = [(i + len(s), i) for s in self.stops if (i := text.find(s)) >= 0]
        if found:
            cut = min(found)[1]
            self.text, self.stopped = text[:cut], True
            return self._show(self.text), True
        self.text = text
        return self._show(text[:len(text) - self._held(text)]), False

    def flush(self) -> str:
        """The rest of the answer (the held-back tail) once no more tokens come."""
        return self._show(self.text)

    def _held(self, text: str) -> int:
        held = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:n]):
                    held = n
                    break
        if text.endswith(REPLACEMENT):
            held = max(held, len(text) - len(text.rstrip(REPLACEMENT)))
        return held

    def _show(self, visible: str) -> str:
        # a decoder may revise text it already gave (rare): then nothing more until it agrees again
        if not visible.startswith(self.shown):
            return ""
        delta, self.shown = visible[len(self.shown):], visible
        return delta
