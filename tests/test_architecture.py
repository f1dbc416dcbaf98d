"""The layout keeps its promises: arrows point one way, and a registration's path from the command line is short.

Every module of the package belongs to a *room* (a top-level module or
package of ``coregister``). Rooms are ranked from the bottom (errors, files,
values) to the top (the command line); a module may import its own room and
rooms ranked below its own, never a room beside or above it. Engines and the
pipeline do not touch files: they may not import :mod:`coregister.io`. The
workflows (geo, medical, qc, outputs, batch, cli) go through the pipeline and
never reach into an engine: they may not import :mod:`coregister.engines`
(the algorithms they use directly live in rooms below, e.g. :mod:`coregister.phase`).
``docs/architecture.md`` draws the same table.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import coregister
from coregister.errors import CoregisterError

PACKAGE = Path(coregister.__file__).parent

#: rank of each room: a module may import rooms of a lower rank and its own room
RANKS = {
    "errors": 0, "_version": 0, "_opencv": 0, "_blas": 0, "_stderr": 0, "_warn": 0, "_scaling": 0, "_pictures": 0,
    "_files": 1, "_memory": 1, "_interrupt": 1, "conventions": 1, "config": 1,
    "_json": 2, "presets": 2, "image": 2,
    "transforms": 3,
    "resample": 4, "data": 4,
    "preprocess": 5, "measures": 5, "phase": 5, "io": 5,
    "engines": 6,
    "pipeline": 7,
    "geo": 8, "medical": 8,
    "qc": 9,
    "outputs": 10,
    "batch": 11,
    "bids": 12,
    "cli": 13,
    "__main__": 14,
}
#: rooms that must not reach these rooms even though they rank below them
#: (DESIGN.md, "Data travels one way": engines know no files; workflows go through the pipeline)
FORBIDDEN = {
    "engines": {"io"}, "pipeline": {"io"},
    **{workflow: {"engines"} for workflow in ("geo", "medical", "qc", "outputs", "batch", "bids", "cli")},
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _target(node: ast.AST) -> list[str]:
    """The coregister modules an import statement (or ``importlib.import_module("...")``) names."""
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "coregister":  # from coregister import presets: the submodule, not the facade
            return [f"coregister.{a.name}" for a in node.names]
        if node.module.startswith("coregister."):
            return [node.module]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("coregister.")]
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args
            and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("coregister.")):
        return [str(node.args[0].value)]
    return []


def _arrows() -> list[tuple[str, str, int]]:
    arrows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        if source == "coregister":  # the facade loads every room on first use, by design
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _target(node):
                arrows.append((source, target, getattr(node, "lineno", 0)))
    return arrows


def test_every_room_has_a_rank() -> None:
    rooms = {_room(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert rooms <= set(RANKS), f"rooms without a rank: {sorted(rooms - set(RANKS))}"


def test_imports_point_down() -> None:
    wrong = []
    for source, target, line in _arrows():
        here, there = _room(source), _room(target)
        if there == "__init__":
            wrong.append(f"{source}:{line} imports the package facade ({target}); import the module itself")
        elif here != there and (RANKS[there] >= RANKS[here] or there in FORBIDDEN.get(here, ())):
            wrong.append(f"{source}:{line} -> {target} ({here} {RANKS[here]} -> {there} {RANKS[there]})")
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_the_rule_catches_an_arrow_upwards(tmp_path: Path) -> None:
    """The checker itself: an engine importing the pipeline, or the pipeline importing io, is caught."""
    bad = ast.parse("from coregister.pipeline import register\nimport coregister.io.nifti\n")
    targets = [t for node in ast.walk(bad) for t in _target(node)]
    assert targets == ["coregister.pipeline", "coregister.io.nifti"]
    here = "engines"
    assert all(RANKS[_room(t)] >= RANKS[here] or _room(t) in FORBIDDEN[here] for t in targets)


@pytest.mark.parametrize("workflow", ["geo", "medical", "qc", "outputs", "batch", "cli"])
def test_the_rule_catches_a_workflow_reaching_into_an_engine(workflow: str) -> None:
    """A workflow importing an engine's module is caught although engines rank below it; the phase room is not."""
    source = ast.parse("from coregister.engines.phase import PhaseEngine\nfrom coregister.phase import phase_correlate\n")
    engines, phase = [t for node in ast.walk(source) for t in _target(node)]
    assert RANKS[_room(engines)] < RANKS[workflow] and _room(engines) in FORBIDDEN[workflow]
    assert RANKS[_room(phase)] < RANKS[workflow] and _room(phase) not in FORBIDDEN[workflow]


class _Reached(CoregisterError):
    """Raised by the stand-in engine once the call has arrived."""


def test_command_line_reaches_the_engine_through_few_modules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``coregister register`` of a 3D pair passes through at most five modules before the engine's ``run``."""
    from coregister.cli import main
    from coregister.engines.sitk import SitkEngine
    from coregister.image import SpatialImage
    from coregister.io import write

    seen: list[str] = []

    def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        for frame in inspect.stack()[1:]:
            name = frame.frame.f_globals.get("__name__", "")
            if name.startswith("coregister.") and name not in seen:
                seen.append(name)
        raise _Reached("reached the engine")

    monkeypatch.setattr(SitkEngine, "run", run)
    rng = np.random.default_rng(0)
    volume = SpatialImage(rng.normal(size=(12, 14, 16)).astype(np.float32), origin=(0, 0, 0), spacing=(1, 1, 1))
    write(volume, tmp_path / "f.nii.gz")
    write(volume, tmp_path / "m.nii.gz")
    code = main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"), "-o", str(tmp_path / "out"),
                 "--preset", "rigid", "-q"])
    assert code == 1 and seen, "the stand-in engine was not reached"
    assert len(seen) <= 5, f"{len(seen)} modules before the engine: {seen[::-1]}"
    assert not (tmp_path / "out").exists()
