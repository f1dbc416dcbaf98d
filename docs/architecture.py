"""Draw ``docs/architecture.png`` from the code: the rooms of the package, their ranks and the imports between them.

The rooms and ranks are the ones ``tests/test_architecture.py`` enforces (it
is imported from there, so the picture and the rule cannot drift); the
arrows are read from the source with ``ast``, as the test reads them. Each
room is a box in the row of its rank, bottom (values) to top (command line),
with its module count and line count; an arrow from A to B means "A imports
B", drawn once per pair of rooms however many modules import, and left out
where a path through other rooms already leads from A to B (the transitive
reduction: the layering, without the clutter of every direct import).

    .venv/bin/python docs/architecture.py            # writes docs/architecture.png
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_architecture import FORBIDDEN, PACKAGE, RANKS, _arrows, _module_name, _room  # noqa: E402


def rooms() -> dict[str, tuple[int, int]]:
    """Room -> (modules, lines of code)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in PACKAGE.rglob("*.py"):
        room = _room(_module_name(path))
        if room == "__init__":
            continue
        out[room][0] += 1
        out[room][1] += len(path.read_text(encoding="utf-8").splitlines())
    return {k: (v[0], v[1]) for k, v in out.items()}


def edges() -> set[tuple[str, str]]:
    """Room -> room imports, transitively reduced: A -> C is left out when A -> B -> ... -> C is drawn."""
    found = set()
    for source, target, _ in _arrows():
        a, b = _room(source), _room(target)
        if a != b and b != "__init__":
            found.add((a, b))
    successors: dict[str, set[str]] = defaultdict(set)
    for a, b in found:
        successors[a].add(b)

    def reachable_without(a: str, b: str) -> bool:
        stack = [n for n in successors[a] if n != b]
        seen = set(stack)
        while stack:
            node = stack.pop()
            if node == b:
                return True
            for nxt in successors[node] - seen:
                seen.add(nxt)
                stack.append(nxt)
        return False

    return {(a, b) for a, b in found if not reachable_without(a, b)}


def draw(path: Path) -> Path:
    sizes = rooms()
    by_rank: dict[int, list[str]] = defaultdict(list)
    for room in sorted(sizes, key=lambda r: (RANKS[r], r)):
        by_rank[RANKS[room]].append(room)
    ranks = sorted(by_rank)
    width = max(len(v) for v in by_rank.values())
    fig, ax = plt.subplots(figsize=(2.3 * width + 1.5, 1.05 * len(ranks) + 1.0), dpi=100)
    centres: dict[str, tuple[float, float]] = {}
    for row, rank in enumerate(ranks):
        names = by_rank[rank]
        for i, name in enumerate(names):
            x = (i - (len(names) - 1) / 2.0) * 2.3
            y = row * 1.05
            centres[name] = (x, y)
            modules, lines = sizes[name]
            colour = "#f4d6a0" if name in FORBIDDEN else "#dde8f5"
            ax.add_patch(FancyBboxPatch((x - 1.0, y - 0.32), 2.0, 0.64, boxstyle="round,pad=0.02", fc=colour, ec="#345"))
            ax.text(x, y + 0.08, name, ha="center", va="center", fontsize=10, weight="bold")
            ax.text(x, y - 0.17, f"{modules} module{'s' if modules > 1 else ''}, {lines} lines", ha="center", va="center",
                    fontsize=7, color="#333")
        ax.text(-(width / 2.0) * 2.3 - 0.6, row * 1.05, f"rank {rank}", ha="right", va="center", fontsize=8, color="#666")
    for a, b in sorted(edges()):
        (xa, ya), (xb, yb) = centres[a], centres[b]
        ax.add_patch(FancyArrowPatch((xa, ya - 0.32), (xb, yb + 0.32), arrowstyle="-|>", mutation_scale=8, lw=0.5,
                                     color="#5a6e8a", alpha=0.55, connectionstyle="arc3,rad=0.08"))
    ax.set_xlim(-(width / 2.0) * 2.3 - 1.6, (width / 2.0) * 2.3 + 0.2)
    ax.set_ylim(-0.6, (len(ranks) - 1) * 1.05 + 0.6)
    ax.axis("off")
    ax.set_title("coregister: rooms by rank (arrows: imports, transitively reduced, always downwards;\n"
                 "orange: may not import io)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(draw(ROOT / "docs" / "architecture.png"))
