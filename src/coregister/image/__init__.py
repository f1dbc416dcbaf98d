"""The one image type: an array with its world geometry and metadata, and its conversions to the objects users hold.

:class:`SpatialImage` converts to and from ``SimpleITK.Image``
(:meth:`~SpatialImage.from_sitk`), nibabel images
(:meth:`~SpatialImage.from_nibabel`, :mod:`coregister.image._nibabel`) and
rioxarray DataArrays (:meth:`~SpatialImage.from_xarray`,
:mod:`coregister.image._xarray`); :mod:`coregister.image.kinds` takes any of
them where an image is expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import SimpleITK as sitk
from pyproj import CRS

from coregister.conventions import affine_from_geometry, orientation_code
from coregister.errors import GeometryError

__all__ = ["SpatialImage"]


def _thawed(value: Any) -> Any:
    """``value`` with every read-only mapping view (nested ones too) replaced by a dict, so that it pickles."""
    if isinstance(value, MappingProxyType | dict):
        return {k: _thawed(v) for k, v in value.items()}
    return value


def _frozen_array(array: Any) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SpatialImage:
    """An image and the geometry that places it in the world.

    Parameters
    ----------
    array : ndarray
        Pixel values, C order, axes ``(z, y, x)`` for volumes and ``(y, x)``
        for planes, with an optional trailing channel/band/time axis. Values
        are what users mean (rescale slope and intercept already applied).
        Stored read-only; :meth:`replace` makes a new image.
    origin : sequence of float
        World position of the centre of the first pixel, in ITK index order
        ``(x, y[, z])``. Medical images: LPS millimetres. Rasters: map units
        of ``crs`` at the pixel centre.
    spacing : sequence of float
        Positive pixel size along ``(x, y[, z])``.
    direction : array_like, shape (d, d)
        Columns are the world directions of the index axes ``x, y[, z]``.
        Defaults to the identity.
    crs : pyproj.CRS or anything ``CRS.from_user_input`` takes, optional
        Coordinate reference system of a geospatial raster; ``None`` otherwise.
    nodata : float, optional
        Value that marks pixels without data.
    mask : ndarray of bool, optional
        Spatial-shape mask, ``True`` where pixels are valid.
    meta : mapping, optional
        What the source format needs to be written back (header fields,
        rasterio profile, DICOM identifiers). Read-only.

    Examples
    --------
    >>> import numpy as np
    >>> img = SpatialImage(np.zeros((4, 5, 6), np.int16), origin=(1.0, 2.0, 3.0), spacing=(0.5, 0.5, 2.0))
    >>> img.ndim, img.shape, img.size
    (3, (4, 5, 6), (6, 5, 4))
    >>> img.index_to_world([[1, 0, 1]]).tolist()
    [[1.5, 2.0, 5.0]]
    >>> img.orientation
    'LPS'
    >>> SpatialImage.from_sitk(img.to_sitk()).same_geometry(img)
    True
    >>> SpatialImage.from_nibabel(img.to_nibabel()).same_geometry(img)  # RAS and (i, j, k) in nibabel
    True
    """

    array: np.ndarray
    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: np.ndarray = None  # type: ignore[assignment]
    crs: CRS | None = None
    nodata: float | None = None
    mask: np.ndarray | None = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        origin = tuple(float(v) for v in self.origin)
        spacing = tuple(float(v) for v in self.spacing)
        ndim = len(origin)
        if ndim not in (2, 3):
            raise GeometryError(f"origin {origin} has {ndim} values; a SpatialImage is 2D or 3D")
        if len(spacing) != ndim:
            raise GeometryError(f"spacing {spacing} has {len(spacing)} values but origin has {ndim}; give one per axis")
        if not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise GeometryError(f"spacing {spacing} must be finite and positive; put flips in the direction matrix")
        if not all(np.isfinite(origin)):
            raise GeometryError(f"origin {origin} must be finite")
        direction = np.eye(ndim) if self.direction is None else np.array(self.direction, dtype=float)
        if direction.size == ndim * ndim:
            direction = direction.reshape(ndim, ndim)
        if direction.shape != (ndim, ndim):
            raise GeometryError(f"direction of shape {direction.shape} does not fit a {ndim}D image; give a {ndim}x{ndim} matrix")
        if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
            raise GeometryError(f"direction {direction.tolist()} is singular; its columns must be independent unit vectors")
        array = _frozen_array(self.array)
        if array.ndim not in (ndim, ndim + 1):
            raise GeometryError(
                f"array of shape {array.shape} does not fit a {ndim}D geometry; expected {ndim} spatial axes "
                "and at most one trailing channel axis"
            )
        mask = self.mask
        if mask is not None:
            mask = _frozen_array(np.asarray(mask, dtype=bool))
            if mask.shape != array.shape[:ndim]:
                raise GeometryError(f"mask shape {mask.shape} differs from the image's spatial shape {array.shape[:ndim]}")
        crs = None if self.crs is None else CRS.from_user_input(self.crs)
        nodata = None if self.nodata is None else float(self.nodata)
        set_ = object.__setattr__
        set_(self, "array", array)
        set_(self, "origin", origin)
        set_(self, "spacing", spacing)
        set_(self, "direction", _frozen_array(direction))
        set_(self, "mask", mask)
        set_(self, "crs", crs)
        set_(self, "nodata", nodata)
        set_(self, "meta", MappingProxyType(dict(self.meta)))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle through the constructor, which makes the arrays read-only and ``meta`` a read-only view again.

        (A read-only mapping view cannot be pickled as it is; worker
        processes receive images this way.)

        Examples
        --------
        >>> import pickle
        >>> img = SpatialImage(np.ones((2, 3)), origin=(1, 2), spacing=(1, 1), meta={"format": "nifti"})
        >>> back = pickle.loads(pickle.dumps(img))
        >>> back.same_geometry(img), back.meta["format"], back.array.flags.writeable
        (True, 'nifti', False)
        """
        return (type(self), (self.array, self.origin, self.spacing, self.direction, self.crs, self.nodata, self.mask,
                             _thawed(self.meta)))

    # ----------------------------------------------------------------- shape
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.origin)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape in array order ``(z, y, x)`` or ``(y, x)``."""
        return tuple(self.array.shape[: self.ndim])

    @property
    def size(self) -> tuple[int, ...]:
        """Spatial size in ITK index order ``(x, y[, z])``."""
        return self.shape[::-1]

    @property
    def has_channels(self) -> bool:
        """Whether the array carries a trailing channel/band/time axis."""
        return self.array.ndim == self.ndim + 1

    @property
    def n_channels(self) -> int:
        """Length of the trailing channel axis (1 when there is none)."""
        return self.array.shape[-1] if self.has_channels else 1

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype."""
        return self.array.dtype

    # -------------------------------------------------------------- geometry
    @property
    def affine(self) -> np.ndarray:
        """Homogeneous world-from-index matrix (index in ITK order ``(x, y[, z])``)."""
        return affine_from_geometry(self.origin, self.spacing, self.direction)

    @property
    def orientation(self) -> str:
        """ITK orientation code of the direction (``"LPS"`` for identity); for 2D rasters, e.g. ``"LS"``."""
        return orientation_code(self.direction)

    @property
    def is_geospatial(self) -> bool:
        """True when the image carries a coordinate reference system."""
        return self.crs is not None

    @property
    def world_centre(self) -> np.ndarray:
        """World coordinates of the image's centre: the middle of its pixel centres (index ``(n - 1) / 2`` per axis).

        Examples
        --------
        >>> SpatialImage(np.zeros((3, 5)), origin=(10.0, 0.0), spacing=(2.0, 1.0)).world_centre.tolist()
        [14.0, 1.0]
        """
        return self.index_to_world([[(n - 1) / 2.0 for n in self.size]])[0]

    @property
    def world_corners(self) -> np.ndarray:
        """World coordinates of the ``2**ndim`` corners of the image's extent (the outer edges of its pixels).

        Examples
        --------
        >>> SpatialImage(np.zeros((3, 5)), origin=(10.0, 0.0), spacing=(2.0, 1.0)).world_corners.tolist()
        [[9.0, -0.5], [9.0, 2.5], [19.0, -0.5], [19.0, 2.5]]
        """
        edges = np.meshgrid(*[[-0.5, n - 0.5] for n in self.size], indexing="ij")
        return self.index_to_world(np.array(edges).reshape(self.ndim, -1).T)

    def index_to_world(self, indices: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Map continuous indices ``(x, y[, z])`` to world points.

        Parameters
        ----------
        indices : array_like, shape (n, d)

        Returns
        -------
        ndarray, shape (n, d)
        """
        indices = np.atleast_2d(np.asarray(indices, dtype=float))
        affine = self.affine
        return indices @ affine[:-1, :-1].T + affine[:-1, -1]

    def world_to_index(self, points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Map world points to continuous indices ``(x, y[, z])`` (inverse of :meth:`index_to_world`)."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        affine = self.affine
        return np.linalg.solve(affine[:-1, :-1], (points - affine[:-1, -1]).T).T

    def world_grid(self) -> np.ndarray:
        """World coordinates of every pixel centre, shape ``spatial shape + (d,)`` (axes in array order)."""
        axes = [np.arange(n, dtype=float) for n in self.shape]
        grids = np.meshgrid(*axes, indexing="ij")  # (z, y, x) order
        index = np.stack(grids[::-1], axis=-1).reshape(-1, self.ndim)
        return self.index_to_world(index).reshape(*self.shape, self.ndim)

    def same_geometry(self, other: SpatialImage, *, atol: float = 1e-6) -> bool:
        """Whether ``other`` has the same grid (shape, origin, spacing, direction) within ``atol``."""
        return (
            self.shape == other.shape
            and np.allclose(self.origin, other.origin, atol=atol, rtol=0)
            and np.allclose(self.spacing, other.spacing, atol=atol, rtol=0)
            and np.allclose(self.direction, other.direction, atol=atol, rtol=0)
        )

    def valid_mask(self) -> np.ndarray:
        """Boolean spatial mask of usable pixels: ``mask``, not ``nodata``, finite in every channel."""
        values = self.array
        valid = np.ones(self.shape, dtype=bool) if self.mask is None else np.array(self.mask)
        if np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.complexfloating):
            finite = np.isfinite(values)
            valid &= finite.all(axis=-1) if self.has_channels else finite
        if self.nodata is not None:
            is_nodata = values == self.nodata if not np.isnan(self.nodata) else np.isnan(values)
            valid &= ~(is_nodata.all(axis=-1) if self.has_channels else is_nodata)
        return valid

    # ------------------------------------------------------------- derived
    def replace(self, **changes: Any) -> SpatialImage:
        """Return a copy with some fields replaced (``dataclasses.replace``).

        Examples
        --------
        >>> import numpy as np
        >>> img = SpatialImage(np.zeros((2, 3)), origin=(0, 0), spacing=(1, 1))
        >>> img.replace(origin=(5, 6)).origin
        (5.0, 6.0)
        """
        return dataclasses.replace(self, **changes)

    def channel(self, index: int) -> SpatialImage:
        """One channel of a multi-channel image as a single-channel image."""
        if not self.has_channels:
            if index != 0:
                raise IndexError(f"channel {index} of a single-channel image; only channel 0 exists")
            return self
        return self.replace(array=self.array[..., index])

    # ------------------------------------------------------------- SimpleITK
    @classmethod
    def from_sitk(
        cls,
        image: sitk.Image,
        *,
        crs: Any = None,
        nodata: float | None = None,
        mask: np.ndarray | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> SpatialImage:
        """Wrap a ``SimpleITK.Image``; geometry is copied exactly.

        A vector image becomes an array with a trailing channel axis. A 4D
        scalar image whose 4th axis is not mixed into space becomes a 3D
        series: its volumes on a trailing axis, ``meta["trailing_axis"] ==
        "time"`` (as :func:`coregister.read` reads a 4D file), which
        :func:`coregister.motion` realigns and :func:`coregister.register`
        refuses. Other 4D and higher images are refused.
        """
        if image.GetDimension() == 4:
            return cls._series_from_sitk(image, crs=crs, nodata=nodata, mask=mask, meta=meta)
        if image.GetDimension() not in (2, 3):
            raise GeometryError(
                f"SimpleITK image of dimension {image.GetDimension()}; coregister images are 2D, 3D or a 4D series"
            )
        return cls(
            sitk.GetArrayFromImage(image),
            origin=image.GetOrigin(),
            spacing=image.GetSpacing(),
            direction=np.array(image.GetDirection()).reshape(image.GetDimension(), -1),
            crs=crs,
            nodata=nodata,
            mask=mask,
            meta=meta or {},
        )

    @classmethod
    def _series_from_sitk(
        cls, image: sitk.Image, *, crs: Any, nodata: float | None, mask: np.ndarray | None,
        meta: Mapping[str, Any] | None,
    ) -> SpatialImage:
        """A 4D SimpleITK image as a 3D series: ``(t, z, y, x)`` pixels moved to ``(z, y, x, t)``."""
        direction = np.array(image.GetDirection()).reshape(4, 4)
        if not np.allclose(direction[3], [0, 0, 0, 1]) or not np.allclose(direction[:3, 3], 0):
            raise GeometryError(
                "SimpleITK image of dimension 4 whose direction mixes the 4th axis into space; "
                "coregister keeps a 4th axis only as a trailing time axis"
            )
        if image.GetNumberOfComponentsPerPixel() > 1:
            raise GeometryError("SimpleITK image of dimension 4 with vector pixels; split it into 3D images first")
        array = np.moveaxis(sitk.GetArrayFromImage(image), 0, -1)  # (t, z, y, x) -> (z, y, x, t)
        return cls(
            np.ascontiguousarray(array),
            origin=image.GetOrigin()[:3],
            spacing=image.GetSpacing()[:3],
            direction=direction[:3, :3],
            crs=crs,
            nodata=nodata,
            mask=mask,
            meta={**(meta or {}), "trailing_axis": "time"},
        )

    def to_sitk(self) -> sitk.Image:
        """Convert to ``SimpleITK.Image`` with exactly the same geometry.

        Boolean arrays become ``uint8``; a channel axis becomes a vector image.
        """
        array = self.array
        if array.dtype == bool:
            array = array.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=self.has_channels)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return image

    # --------------------------------------------------------------- nibabel
    @classmethod
    def from_nibabel(cls, image: Any, *, volume: int | None = None, affine_source: str = "auto") -> SpatialImage:
        """Wrap a nibabel image (``nibabel.Nifti1Image``, ``Nifti2Image``; MGH, MINC by their affine).

        nibabel's RAS world becomes LPS and its ``(i, j, k)`` array ``(z, y,
        x)`` (:mod:`coregister.conventions`), as a view of the same memory for
        an in-memory image; a file-backed image is read (and its
        ``scl_slope``/``scl_inter`` applied exactly, in the smallest dtype
        that holds the values). NIfTI header fields (sform/qform codes,
        spatial and time units, descrip, intent, dim_info, slice timing,
        cal_min/max) are kept in ``meta["nifti"]`` and come back with
        :meth:`to_nibabel` and when written as NIfTI.

        Parameters
        ----------
        image : nibabel image
        volume : int, optional
            For a 4D image, only this volume (negative counts from the end);
            without it, a 4D image gets a trailing time axis.
        affine_source : {"auto", "sform", "qform"}
            ``"auto"``: the image's ``affine`` (nibabel's choice: sform when
            ``sform_code > 0``, else qform; a warning when the two disagree).

        Examples
        --------
        >>> import nibabel as nib
        >>> ras = np.diag([2.0, 2.0, 3.0, 1.0]); ras[:3, 3] = [10.0, 20.0, 30.0]
        >>> image = SpatialImage.from_nibabel(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), ras))
        >>> image.shape, image.origin, image.orientation   # (z, y, x); LPS: x and y flip sign
        ((6, 5, 4), (-10.0, -20.0, 30.0), 'RAS')
        """
        from coregister.image._nibabel import image_parts

        return cls(**image_parts(image, volume=volume, affine_source=affine_source))

    def to_nibabel(self) -> Any:
        """A ``nibabel.Nifti1Image``: RAS world, ``(i, j, k)`` array (a view of the same values where the dtype allows).

        The sform and the qform both hold the geometry, with the codes, units
        and header fields the image was read with (both codes 1, scanner,
        otherwise); the header's data type and scaling are the source's where
        the values still fit them. A sheared direction warns (a qform cannot
        hold it). 2D images with channels are refused.

        Examples
        --------
        >>> img = SpatialImage(np.zeros((4, 5, 6), np.float32), origin=(1.0, 2.0, 3.0), spacing=(1.0, 1.0, 2.0))
        >>> nifti = img.to_nibabel()
        >>> nifti.shape, nifti.affine[:3, 3].tolist(), int(nifti.header["sform_code"])
        ((6, 5, 4), [-1.0, -2.0, 3.0], 1)
        """
        from coregister.image._nibabel import nifti_image

        return nifti_image(self, name="the image")

    # ---------------------------------------------------------------- xarray
    @classmethod
    def from_xarray(cls, array: Any) -> SpatialImage:
        """Wrap a rioxarray DataArray (``rioxarray.open_rasterio``): dims ``(y, x)`` or ``(band, y, x)``.

        The geotransform (pixel corners) becomes centre-based geometry, the
        CRS and nodata (``_FillValue``; NaN for an array opened with
        ``masked=True``) are kept, the band axis becomes the trailing channel
        axis, and band coordinates, attributes and encoding travel in
        ``meta["xarray"]`` for :meth:`to_xarray`. A numpy-backed array is
        shared, not copied; a dask-backed one is computed here (give the
        DataArray itself to :func:`coregister.geo.coregister`, which reads
        it window by window). Needs ``pip install 'coregister[xarray]'``.
        """
        from coregister.image._xarray import dataarray_parts

        return cls(**dataarray_parts(array))

    def to_xarray(self) -> Any:
        """A rioxarray DataArray of this 2D image (values shared): ``(y, x)`` or ``(band, y, x)``.

        ``x``/``y`` coordinates at pixel centres; the geotransform, CRS and
        nodata written on ``spatial_ref`` as rioxarray writes them; names,
        band coordinates, attributes and encoding of a DataArray the image
        came from. Needs ``pip install 'coregister[xarray]'``.
        """
        from coregister.image._xarray import dataarray

        return dataarray(self)

    def _repr_html_(self) -> str:
        """The notebook view: geometry, and the image (volumes: three planes), windowed on its own percentiles."""
        from coregister.image._display import image_html

        return image_html(self)

    def __repr__(self) -> str:
        extra = []
        if self.has_channels:
            extra.append(f"channels={self.n_channels}")
        if self.crs is not None:
            extra.append(f"crs={self.crs.to_string()!r}")
        if self.nodata is not None:
            extra.append(f"nodata={self.nodata:g}")
        if self.mask is not None:
            extra.append("mask")
        tail = (", " + ", ".join(extra)) if extra else ""
        origin = ", ".join(f"{v:.6g}" for v in self.origin)
        spacing = ", ".join(f"{v:.6g}" for v in self.spacing)
        return (
            f"SpatialImage(size={self.size}, dtype={self.dtype}, origin=({origin}), spacing=({spacing}), "
            f"orientation={self.orientation!r}{tail})"
        )
