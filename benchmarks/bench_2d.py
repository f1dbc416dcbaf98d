"""2D registration benchmark: coregister's ECC and feature engines beside OpenCV and scikit-image, one run.

Cases: scikit-image's ``camera`` and ``astronaut`` (512 x 512, grey), each
warped by seeded translations (sub-pixel, up to 10 px), similarities
(rotation up to 30 degrees, scale 0.8-1.25), affines and homographies (each
corner moved by up to 10 % of the size); cubic-spline resampling, black
outside, Gaussian noise (sigma 2 grey levels) on both images. Every method
runs on the same cases, interleaved, in this one process; the registration
call alone is timed (``time.perf_counter``; CPU time of the process beside
it, which a busy shared machine disturbs less, though OpenCV's threads add
up in it), ``--repeats`` times per case.

Error: mean displacement between the recovered and true maps over all
pixels (translation, similarity, affine); mean displacement of the four
corners (homography). A method that raises or returns nothing counts as a
failure and is left out of the error median.

Peers, as practitioners call them:

* ``opencv ecc 1-level``: ``cv2.findTransformECC`` with its default criteria
  (50 iterations, eps 1e-3) and ``gaussFiltSize=5``, no mask; ``MOTION_AFFINE``
  for similarities (OpenCV has no similarity model);
* ``opencv ecc pyramid``: ``cv2.findTransformECCMultiScale``, 4 levels, same
  criteria, no mask; ``+mask``: with the moving image's valid region as its
  sample mask;
* ``sift+ransac`` / ``orb+ransac``: ``SIFT_create()`` / ``ORB_create(2000)``,
  brute-force matching with Lowe's ratio (0.75 / 0.8), RANSAC at 3 px:
  ``estimateAffinePartial2D`` (translation, similarity), ``estimateAffine2D``,
  ``findHomography``;
* ``skimage phase``: ``phase_cross_correlation(upsample_factor=100)``
  (translation only).

Ours: ``ecc`` (:class:`coregister.engines.ecc.EccEngine`, default pyramid, the
warped border as moving mask), ``features+ecc``
(:class:`coregister.engines.features.FeatureEngine`: ORB, MAGSAC, ECC
refinement), ``opencv-ecc`` (our wrapper: OpenCV's masked ECC on our
pyramid), ``auto`` (the fallback chain, quality check included).

``--with-3d`` adds MNI152 at 1 mm (``../shared/data/medical/antspy/mni.nii.gz``)
warped by seeded rigid transforms: our ECC engine beside the SimpleITK
engine's default rigid preset, same process, alternating (error: mean over
head voxels, mm).

``--views SEEDS`` adds issue 12's case: ``register(preset="auto")`` on
800 x 640 photos (astronaut, coffee, rocket, chelsea) under the validation
corpus's similarities, affines and perspective views (a camera turned 10-45
degrees), beside our homography preset, SIFT + RANSAC and OpenCV's ECC
pyramid with a homography (``--skip-512`` leaves the 512 x 512 cases out).

Run from the repository root::

    .venv/bin/python benchmarks/bench_2d.py --seeds 3 --repeats 3 --with-3d --json bench_2d.json

Not a test: pytest never collects it.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from skimage import color, data
from skimage.registration import phase_cross_correlation

from coregister.config import RegistrationConfig, Stage
from coregister.engines.ecc import EccEngine
from coregister.engines.features import FeatureEngine
from coregister.engines.opencv_ecc import OpenCvEccEngine
from coregister.image import SpatialImage
from coregister.transforms import Homography, Transform

KINDS = ("translation", "similarity", "affine", "homography")
TARGET_MS = {"translation": 60.0, "similarity": 60.0, "affine": 60.0, "homography": 120.0}
BAR_PX = {"translation": 0.02, "similarity": 0.05, "affine": 0.05, "homography": 0.1}
# the method each target of issue 4 is about: intensity ECC with a pyramid and a border mask, features + ECC
DESIGNATED = {"translation": "ours: ecc", "similarity": "ours: ecc", "affine": "ours: ecc", "homography": "ours: features+ecc"}
_MOTION = {
    "translation": cv2.MOTION_TRANSLATION,
    "similarity": cv2.MOTION_AFFINE,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}


# --------------------------------------------------------------------- cases
def _photo(name: str) -> np.ndarray:
    values = getattr(data, name)()
    if values.ndim == 3:
        values = color.rgb2gray(values[..., :3]) * 255.0
    return values.astype(np.float32)


def _warp_matrix(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    if kind == "translation":
        m = np.eye(3)
        m[:2, 2] = rng.uniform(-10, 10, 2)
        return m
    if kind == "homography":
        corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
        moved = corners + (rng.uniform(-0.1, 0.1, (4, 2)) * [w, h]).astype(np.float32)
        return cv2.getPerspectiveTransform(corners, moved).astype(float)
    angle = np.deg2rad(rng.uniform(-30, 30) if kind == "similarity" else rng.uniform(-20, 20))
    scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))) if kind == "similarity" else 1.0
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if kind == "affine":
        linear = linear @ (np.eye(2) + rng.uniform(-0.12, 0.12, (2, 2)))
    m = np.eye(3)
    m[:2, :2] = linear
    m[:2, 2] = centre + rng.uniform(-15, 15, 2) - linear @ centre
    return m


def make_case(name: str, kind: str, seed: int, noise: float = 2.0) -> dict[str, Any]:
    """Fixed and moving grey images, the moving image's valid region and the true fixed -> moving pixel map."""
    values = _photo(name)
    rng = np.random.default_rng([seed, KINDS.index(kind), ("camera", "astronaut").index(name)])
    truth = _warp_matrix(kind, values.shape, rng)
    h, w = values.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    source = np.linalg.inv(truth) @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    source = source[:2] / source[2]
    moved = ndimage.map_coordinates(values.astype(float), [source[1], source[0]], order=3, mode="constant", cval=0.0)
    valid = ((source[0] >= 0) & (source[0] <= w - 1) & (source[1] >= 0) & (source[1] <= h - 1)).reshape(h, w)
    fixed = values + rng.normal(0, noise, values.shape)
    moving = moved.reshape(h, w) + rng.normal(0, noise, values.shape)
    return {
        "name": name,
        "kind": kind,
        "seed": seed,
        "fixed": fixed.astype(np.float32),
        "moving": moving.astype(np.float32),
        "valid": valid,
        "truth": truth,
    }


def error_px(kind: str, estimate: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> float:
    h, w = shape
    if kind == "homography":
        points = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)
    else:
        yy, xx = np.mgrid[0:h:2, 0:w:2].astype(float)
        points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    a = Homography(estimate).transform_points(points)
    b = Homography(truth).transform_points(points)
    return float(np.mean(np.linalg.norm(a - b, axis=1)))


# ------------------------------------------------------------------- methods
Method = Callable[[dict[str, Any]], "np.ndarray | None"]


def _as3(warp: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[: warp.shape[0]] = warp
    return out


def _opencv_ecc(case: dict[str, Any]) -> np.ndarray:
    motion = _MOTION[case["kind"]]
    warp = np.eye(3, dtype=np.float32) if motion == cv2.MOTION_HOMOGRAPHY else np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-3)
    _, warp = cv2.findTransformECC(case["fixed"], case["moving"], warp, motion, criteria, None, 5)
    return _as3(warp)


def _opencv_pyramid(case: dict[str, Any], masked: bool = False) -> np.ndarray:
    motion = _MOTION[case["kind"]]
    warp = np.eye(3, dtype=np.float32) if motion == cv2.MOTION_HOMOGRAPHY else np.eye(2, 3, dtype=np.float32)
    params = cv2.ECCParameters()
    params.motionType = motion
    params.nlevels = 4
    params.criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-3)
    params.gaussFiltSize = 5
    sample_mask = np.where(case["valid"], np.uint8(255), np.uint8(0)) if masked else None
    _, warp = cv2.findTransformECCMultiScale(case["fixed"], case["moving"], warp, params, None, sample_mask)
    return _as3(warp)


def _eight(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 0, 255).astype(np.uint8)


def _keypoints(detector: str) -> Method:
    def run(case: dict[str, Any]) -> np.ndarray | None:
        if detector == "sift":
            engine, norm, ratio = cv2.SIFT_create(), cv2.NORM_L2, 0.75
        else:
            engine, norm, ratio = cv2.ORB_create(2000), cv2.NORM_HAMMING, 0.8
        kp1, d1 = engine.detectAndCompute(_eight(case["fixed"]), None)
        kp2, d2 = engine.detectAndCompute(_eight(case["moving"]), None)
        if d1 is None or d2 is None:
            return None
        good = [m for m, n in (p for p in cv2.BFMatcher(norm).knnMatch(d1, d2, k=2) if len(p) == 2) if m.distance < ratio * n.distance]
        src = np.float32([kp1[m.queryIdx].pt for m in good])
        dst = np.float32([kp2[m.trainIdx].pt for m in good])
        kind = case["kind"]
        if kind == "homography":
            if len(good) < 4:
                return None
            h, _ = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
            return None if h is None else h
        if len(good) < 3:
            return None
        fit = cv2.estimateAffine2D if kind == "affine" else cv2.estimateAffinePartial2D
        a, _ = fit(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
        return None if a is None else _as3(a)

    return run


def _skimage_phase(case: dict[str, Any]) -> np.ndarray | None:
    if case["kind"] != "translation":
        return None
    shift, _, _ = phase_cross_correlation(case["fixed"], case["moving"], upsample_factor=100)
    m = np.eye(3)
    m[:2, 2] = -shift[::-1]  # the shift registers moving onto fixed; fixed -> moving is its opposite
    return m


def _spatial(values: np.ndarray) -> SpatialImage:
    return SpatialImage(values, origin=(0, 0), spacing=(1, 1))


def _matrix(transform: Transform) -> np.ndarray:
    return np.asarray(transform.matrix if isinstance(transform, Homography) else transform.homogeneous)  # type: ignore[attr-defined]


def _ours(engine: Any, **extra: Any) -> Method:
    def run(case: dict[str, Any]) -> np.ndarray | None:
        config = RegistrationConfig(stages=(Stage(model=case["kind"], extra=tuple(extra.items())),))
        out = engine.run(_spatial(case["fixed"]), _spatial(case["moving"]), config, moving_mask=case["valid"])
        return _matrix(out.transform)

    return run


def _ours_auto(case: dict[str, Any]) -> np.ndarray | None:
    from coregister.pipeline import run_auto

    config = RegistrationConfig(stages=(Stage(model=case["kind"]),))
    out = run_auto(_spatial(case["fixed"]), _spatial(case["moving"]), config, moving_mask=case["valid"])
    return _matrix(out.transform)


METHODS: dict[str, tuple[Method, tuple[str, ...]]] = {
    "ours: ecc": (_ours(EccEngine()), KINDS),
    "ours: features+ecc": (_ours(FeatureEngine()), KINDS),
    "ours: opencv-ecc (masked pyramid)": (_ours(OpenCvEccEngine()), KINDS),
    "ours: auto chain": (_ours_auto, KINDS),
    "opencv ecc 1-level": (_opencv_ecc, KINDS),
    "opencv ecc pyramid (4)": (_opencv_pyramid, KINDS),
    "opencv ecc pyramid (4) +mask": (lambda c: _opencv_pyramid(c, masked=True), KINDS),
    "sift+ransac": (_keypoints("sift"), KINDS),
    "orb+ransac": (_keypoints("orb"), KINDS),
    "skimage phase": (_skimage_phase, ("translation",)),
}


# --------------------------------------------------------------------- runs
def run_2d(seeds: int, repeats: int, methods: list[str]) -> dict[str, Any]:
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    errors: dict[tuple[str, str], list[float]] = defaultdict(list)
    failures: dict[tuple[str, str], int] = defaultdict(int)
    cases = [make_case(name, kind, seed) for kind in KINDS for name in ("camera", "astronaut") for seed in range(seeds)]
    for method in methods:  # warm-up: imports, OpenCV's first-call costs
        function, kinds = METHODS[method]
        for case in cases[:1]:
            try:
                function(case)
            except cv2.error:
                pass
    for case in cases:
        for repeat in range(repeats):
            order = methods if repeat % 2 == 0 else methods[::-1]  # alternate, so load drifts hit all alike
            for method in order:
                function, kinds = METHODS[method]
                if case["kind"] not in kinds:
                    continue
                key = (method, case["kind"])
                started, started_cpu = time.perf_counter(), time.process_time()
                try:
                    estimate = function(case)
                except cv2.error:
                    estimate = None
                elapsed = time.perf_counter() - started
                cpu[key].append(time.process_time() - started_cpu)
                if repeat == 0:
                    if estimate is None or not np.all(np.isfinite(estimate)):
                        failures[key] += 1
                    else:
                        errors[key].append(error_px(case["kind"], estimate, case["truth"], case["fixed"].shape))
                times[key].append(elapsed)
        print(f"  done {case['kind']} {case['name']} seed {case['seed']}", file=sys.stderr, flush=True)
    rows = []
    for method in methods:
        for kind in KINDS:
            key = (method, kind)
            if key not in times:
                continue
            errs = errors.get(key, [])
            rows.append(
                {
                    "method": method,
                    "kind": kind,
                    "median_ms": 1000 * statistics.median(times[key]),
                    "median_cpu_ms": 1000 * statistics.median(cpu[key]),
                    "median_error_px": statistics.median(errs) if errs else float("nan"),
                    "max_error_px": max(errs) if errs else float("nan"),
                    "failures": failures.get(key, 0),
                    "cases": len(errs) + failures.get(key, 0),
                }
            )
    return {"cases_per_kind": 2 * seeds, "repeats": repeats, "rows": rows}


def run_3d(seeds: int) -> dict[str, Any]:
    import SimpleITK as sitk

    from coregister import presets
    from coregister.engines import get_engine
    from coregister.transforms import Rigid

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "medical" / "antspy" / "mni.nii.gz"
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    fixed = SpatialImage.from_sitk(image)
    centre = fixed.world_centre
    head = fixed.world_grid()[np.asarray(fixed.array) > 1000]
    engines = {"ours: ecc rigid": (EccEngine(), RegistrationConfig(stages=(Stage(model="rigid"),)))}
    try:
        engines["sitk engine rigid preset"] = (get_engine("sitk"), presets.rigid())
    except Exception as exc:  # the SimpleITK engine is another helper's module: report its absence
        print(f"SimpleITK engine unavailable: {exc}", file=sys.stderr)
    times: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[float]] = defaultdict(list)
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        truth = Rigid.from_angles(np.deg2rad(rng.uniform(-10, 10, 3)), translation=rng.uniform(-10, 10, 3), center=centre)
        moved = sitk.GetArrayFromImage(sitk.Resample(image, image, truth.inverse().to_sitk(), sitk.sitkBSpline, 0.0))
        moved = moved + rng.normal(0, 50.0, moved.shape).astype(np.float32)
        moving = fixed.replace(array=moved)
        names = list(engines) if seed % 2 == 0 else list(engines)[::-1]
        for name in names:
            engine, config = engines[name]
            started = time.perf_counter()
            out = engine.run(fixed, moving, config)
            times[name].append(time.perf_counter() - started)
            errors[name].append(
                float(np.mean(np.linalg.norm(out.transform.transform_points(head) - truth.transform_points(head), axis=1)))
            )
        print(f"  done 3D seed {seed}", file=sys.stderr, flush=True)
    return {
        "volume": "MNI152 1 mm (182 x 218 x 182)",
        "rows": [
            {"method": n, "median_s": statistics.median(times[n]), "median_error_mm": statistics.median(errors[n]),
             "max_error_mm": max(errors[n]), "cases": len(times[n])}
            for n in engines
        ],
    }


# ------------------------------------------------------------- 800 x 640 views
VIEW_PHOTOS = ("astronaut", "coffee", "rocket", "chelsea")
VIEW_KINDS = ("similarity", "affine", "perspective")
VIEW_SHAPE = (640, 800)


def _view_photo(name: str) -> np.ndarray:
    from skimage import transform

    values = _photo(name) / 255.0
    return (transform.resize(values, VIEW_SHAPE, anti_aliasing=True) * 255.0).astype(np.float32)


def _view_methods() -> dict[str, Method]:
    import coregister as cr

    def preset(name: str) -> Method:
        def run(case: dict[str, Any]) -> np.ndarray | None:
            return _matrix(cr.register(_spatial(case["fixed"]), _spatial(case["moving"]), preset=name).transform)

        return run

    def homography_peer(method: Method) -> Method:
        return lambda case: method({**case, "kind": "homography"})

    return {
        "ours: register(preset='auto')": preset("auto"),
        "ours: register(preset='homography')": preset("homography"),
        "sift+ransac homography": homography_peer(_keypoints("sift")),
        "opencv ecc pyramid (4) homography": homography_peer(_opencv_pyramid),
    }


def run_views(seeds: int) -> dict[str, Any]:
    """``preset="auto"`` on 800 x 640 photos under similarities, affines and views 10-45 degrees apart (issue 12).

    Cases from :func:`corpus.warp_matrix` (the validation corpus's warps);
    no mask given; error = mean px over the fixed pixels that the truth
    keeps in the moving frame. Beside it: our homography preset, SIFT +
    RANSAC homography and OpenCV's ECC pyramid with a homography, each
    timed on the same case in this process.
    """
    import corpus

    methods = _view_methods()
    rows: list[dict[str, Any]] = []
    warm = corpus.warp_photo(_view_photo(VIEW_PHOTOS[0]), np.eye(3), np.random.default_rng(0))
    for function in methods.values():  # warm-up: imports, OpenCV's first calls
        function({"fixed": warm[0], "moving": warm[1], "valid": warm[2], "kind": "similarity"})
    for kind in VIEW_KINDS:
        for name in VIEW_PHOTOS:
            for seed in range(1, seeds + 1):
                rng = np.random.default_rng(40_000 + seed)
                values = _view_photo(name)
                truth = corpus.warp_matrix(kind, values.shape, rng)
                fixed, moving, valid = corpus.warp_photo(values, truth, rng)
                points = corpus._overlap_points(values.shape, truth)
                case = {"fixed": fixed, "moving": moving, "valid": valid, "kind": kind}
                for method, function in methods.items():
                    started = time.perf_counter()
                    try:
                        estimate = function(case)
                    except Exception as exc:  # a peer or ours failing is a row, not a crash
                        logging.getLogger(__name__).info("%s failed: %s", method, exc)
                        estimate = None
                    elapsed = time.perf_counter() - started
                    error = (float(np.mean(np.linalg.norm(Homography(estimate).transform_points(points)
                                                          - Homography(truth).transform_points(points), axis=1)))
                             if estimate is not None and np.all(np.isfinite(estimate)) else float("inf"))
                    rows.append({"method": method, "kind": kind, "photo": name, "seed": seed, "s": elapsed,
                                 "error_px": error})
                print(f"  done view {kind} {name} seed {seed}", file=sys.stderr, flush=True)
    return {"seeds": seeds, "photos": list(VIEW_PHOTOS), "rows": rows}


def views_markdown(views: dict[str, Any]) -> str:
    lines = [f"800 x 640 views ({', '.join(views['photos'])}; {views['seeds']} seeds per photo and kind): time and "
             "mean error over the overlap, per method and kind.", "",
             "| method | kind | median s | max s | median error px | max error px | cases |",
             "|---|---|---:|---:|---:|---:|---:|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in views["rows"]:
        groups[(row["method"], row["kind"])].append(row)
    for (method, kind), rows in groups.items():
        times = [r["s"] for r in rows]
        errors = [r["error_px"] for r in rows]
        lines.append(f"| {method} | {kind} | {statistics.median(times):.2f} | {max(times):.2f} | "
                     f"{statistics.median(errors):.4g} | {max(errors):.4g} | {len(rows)} |")
    auto = {(r["kind"], r["photo"], r["seed"]): r for r in views["rows"] if "auto" in r["method"]}
    homography = {(r["kind"], r["photo"], r["seed"]): r for r in views["rows"] if "'homography'" in r["method"]}
    perspective = [k for k in auto if k[0] == "perspective"]
    worse = [k for k in perspective if auto[k]["error_px"] > homography[k]["error_px"] + 0.05]
    slow = [k for k in auto if auto[k]["s"] >= 2.0]
    lines += ["", f"auto worse than preset='homography' (by more than 0.05 px) on {len(worse)}/{len(perspective)} "
              f"perspective pairs; auto at or over 2 s on {len(slow)}/{len(auto)} pairs."]
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if "2d" in result:
        lines += _markdown_512(result)
    if "3d" in result:
        lines += ["", f"3D: {result['3d']['volume']}, seeded rigid warps (up to 10 deg, 10 mm), noise; error in the head.", "",
                  "| method | median s | median error mm | max error mm | cases |", "|---|---:|---:|---:|---:|"]
        for row in result["3d"]["rows"]:
            lines.append(f"| {row['method']} | {row['median_s']:.2f} | {row['median_error_mm']:.4f} | "
                         f"{row['max_error_mm']:.4f} | {row['cases']} |")
    if "views" in result:
        lines += ["", views_markdown(result["views"])]
    lines += ["", f"machine: {result['machine']}"]
    return "\n".join(lines)


def _markdown_512(result: dict[str, Any]) -> list[str]:
    lines = [
        f"2D: {result['2d']['cases_per_kind']} cases per kind (camera, astronaut; 512 x 512; noise sigma 2), "
        f"{result['2d']['repeats']} timed runs per case; error = mean px over the image (corners for homographies). "
        "✓/✗: issue 4's target (time and worst error) for the method it names.",
        "",
        "| method | kind | median ms | median CPU ms | median error px | max error px | failed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["2d"]["rows"]:
        mark = ""
        if row["method"] == DESIGNATED[row["kind"]]:
            ok = row["median_ms"] < TARGET_MS[row["kind"]] and row["max_error_px"] < BAR_PX[row["kind"]] and not row["failures"]
            mark = " ✓" if ok else " ✗"
        lines.append(
            f"| {row['method']} | {row['kind']} | {row['median_ms']:.0f} | {row['median_cpu_ms']:.0f} | {row['median_error_px']:.4f} | "
            f"{row['max_error_px']:.4f} | {row['failures']}/{row['cases']}{mark} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeded warps per image and kind (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case and method (default 3)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    parser.add_argument("--with-3d", action="store_true", help="add the MNI152 1 mm ECC vs SimpleITK engine comparison")
    parser.add_argument("--seeds-3d", type=int, default=3)
    parser.add_argument("--views", type=int, default=0, metavar="SEEDS",
                        help="also run preset='auto' on 800 x 640 views, SEEDS per photo and kind (issue 12)")
    parser.add_argument("--skip-512", action="store_true", help="leave out the 512 x 512 cases")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    import os
    import platform

    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OpenCV {cv2.__version__}",
    }
    if not args.skip_512:
        result["2d"] = run_2d(args.seeds, args.repeats, list(args.methods))
    if args.with_3d:
        result["3d"] = run_3d(args.seeds_3d)
    if args.views:
        result["views"] = run_views(args.views)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
