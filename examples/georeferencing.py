"""Georeferencing: give an image with no geotransform (a scan, a drone photo, a screenshot) map coordinates.

A crop of the Landsat 7 scene ``RGB.byte.tif`` is rotated by 12 degrees,
shrunk to 80 % and saved as a plain PNG: it has lost all georeferencing.
It is then georeferenced twice:

1. against the full, georeferenced scene (``base=``): SIFT features, a
   robust affine and an ECC refinement;
2. from ground control points (``gcps=``): a CSV of ``pixel, line, x, y``,
   here six points read off the known truth, fitted by an affine.

Both write a GeoTIFF with CRS and geotransform. Because the crop, rotation
and scale are known, the script reports the error at the image's corners in
pixels of the base scene (300 m).

Data: ``rasterio_landsat7`` (CC0, derived from USGS Landsat 7 imagery).

    python examples/georeferencing.py --data-root ../shared/data -o georef-out

The same from the shell::

    coregister geo georef crop.png --base RGB.byte.tif -o crop_georef.tif
    coregister geo georef crop.png --gcps gcps.csv --crs EPSG:32618 -o crop_gcps.tif
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
from _common import dataset, parser, setup

import coregister as cr
from coregister import geo


def make_unreferenced(base: cr.SpatialImage, *, rows: tuple[int, int], cols: tuple[int, int], angle_deg: float, scale: float):
    """The crop, rotated and scaled, as a plain image; and the map (x, y) of any of its corner-based pixel positions."""
    crop = np.ascontiguousarray(base.array[rows[0] : rows[1], cols[0] : cols[1]])
    h, w = crop.shape[:2]
    rotation = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, scale)  # pixel centres, src -> dst
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)
    moved = corners @ rotation[:, :2].T + rotation[:, 2]
    rotation[:, 2] -= moved.min(axis=0)  # keep the whole crop in view
    size = np.ceil(moved.max(axis=0) - moved.min(axis=0)).astype(int) + 1
    warped = cv2.warpAffine(crop, rotation, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)
    image = cr.SpatialImage(warped, origin=(0.0, 0.0), spacing=(1.0, 1.0))
    inverse = cv2.invertAffineTransform(rotation)
    geotransform = np.array(cr.conventions.geometry_to_geotransform(base.origin, base.spacing, base.direction)).reshape(3, 3)

    def to_map(corner_px: np.ndarray) -> np.ndarray:
        centres = np.atleast_2d(corner_px) - 0.5  # corner-based -> pixel centres (OpenCV's convention)
        source = centres @ inverse[:, :2].T + inverse[:, 2] + 0.5 + [cols[0], rows[0]]  # crop -> base, corner-based
        return source @ geotransform[:2, :2].T + geotransform[:2, 2]

    return image, to_map


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], default_out="georef-out")
    args = p.parse_args(argv)
    setup(args)
    base_path = dataset("rasterio_landsat7", args) / "RGB.byte.tif"
    base = cr.read(base_path)
    image, to_map = make_unreferenced(base, rows=(150, 500), cols=(250, 600), angle_deg=12.0, scale=0.8)
    crop_path = cr.write(image, args.out / "crop.png")
    height, width = image.shape
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], float)
    truth = to_map(corners)
    pixel_m = float(base.spacing[0])

    by_base = geo.georeference(crop_path, base=base_path, output=args.out / "crop_georef.tif")
    error_base = np.linalg.norm(np.array(by_base.extras["corners"]) - truth, axis=1) / pixel_m

    grid = np.array([[x, y] for x in (0.2, 0.5, 0.8) for y in (0.25, 0.75)]) * [width, height]
    gcps = np.column_stack([grid, to_map(grid)])
    gcp_file = args.out / "gcps.csv"
    np.savetxt(gcp_file, gcps, delimiter=",", header="pixel,line,x,y", comments="", fmt="%.6f")
    by_gcps = geo.georeference(crop_path, gcps=gcp_file, crs=base.crs, output=args.out / "crop_gcps.tif")
    error_gcps = np.linalg.norm(np.array(by_gcps.extras["corners"]) - truth, axis=1) / pixel_m

    written = cr.read(args.out / "crop_georef.tif")
    print(f"crop {width} x {height} px, rotated 12 deg, scaled 0.8, no georeferencing; written {written.crs.to_string()}")
    print(f"against the base scene: corner error mean {error_base.mean():.3f} px, worst {error_base.max():.3f} px "
          f"(base pixels, {pixel_m:.0f} m); {by_base.time_s:.2f} s")
    print(f"from {len(gcps)} GCPs: corner error mean {error_gcps.mean():.4f} px, fit RMSE {by_gcps.extras['rmse_px']:.4f} px")
    print(f"wrote {args.out / 'crop_georef.tif'}, {args.out / 'crop_gcps.tif'}, {gcp_file}")
    return 0 if error_base.max() < 1.0 else 3


if __name__ == "__main__":
    sys.exit(main())
