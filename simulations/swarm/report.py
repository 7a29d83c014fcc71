"""A run's files: result.json (scenario, summary, speed), asks.csv, and PNG plots."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def write_run(out: Path, scenario, metrics, speed: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    result = {"scenario": asdict(scenario), "summary": metrics.summary(), "speed": speed}
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    with (out / "asks.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ttft_swarm_s", "ttft_solo_s", "lookup_s"])
        w.writerows(zip(*(_round(x) for x in (metrics.ttft, metrics.ttft_solo, metrics.ask_lookup))))
    _ttft_plot(out / "ttft.png", metrics)
    _walk_plot(out / "lookups.png", metrics)
    _load_plot(out / "load.png", metrics)
    return result


def _round(xs):
    return [round(x, 4) for x in xs]


def _cdf(ax, xs, label, points: int = 2000):
    """The empirical CDF through at most `points` of its steps (a day at 10^5 nodes has millions
    of walks: drawing each step took half a minute and looks the same)."""
    if xs:
        s, n = sorted(xs), len(xs)
        at = range(n) if n <= points else sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
        ax.plot([s[i] for i in at], [(i + 1) / n for i in at], label=label)


def _ttft_plot(path: Path, m) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    _cdf(ax, m.ttft, "with the swarm")
    _cdf(ax, m.ttft_solo, "each node on its own")
    ax.set_xscale("log")
    ax.set_xlabel("time to first token (s)")
    ax.set_ylabel("share of asks")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _walk_plot(path: Path, m) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    if m.walk_rounds:
        top = max(m.walk_rounds)
        a.hist(m.walk_rounds, bins=range(0, top + 2), align="left", rwidth=0.8)
    a.set_xlabel("rounds per DHT walk")
    a.set_ylabel("walks")
    _cdf(b, m.walk_seconds, "walk")
    _cdf(b, m.find_seconds, "find (walk + providers)")
    b.set_xlabel("seconds")
    b.set_ylabel("share")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load_plot(path: Path, m) -> None:
    """Lorenz curve of bytes served per node: the diagonal is perfect equality."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    xs = sorted(m.up)
    total = sum(xs) or 1.0
    acc, cum = 0.0, [0.0]
    for x in xs:
        acc += x
        cum.append(acc / total)
    ax.plot([i / len(xs) for i in range(len(xs) + 1)], cum, label="bytes served")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="equal load")
    ax.set_xlabel("share of nodes (least loaded first)")
    ax.set_ylabel("share of bytes served")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def line_plot(path: Path, xs, series: dict[str, list[float]], xlabel: str, ylabel: str, logx=False) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
