"""Atlas to subject and back: a diffeomorphic registration of the MNI152 template to Colin27, labels carried both ways.

The subject (Colin27) is the fixed image and the template (MNI152) the
moving one: the answer maps subject points to template points, so the
template's atlas comes into the subject by resampling it with the answer
(nearest neighbour), and the subject goes into template space with the
answer's inverse (the displacement field inverted numerically, its residual
stated). Written into OUT, as ``coregister register --preset syn`` writes
them: ``transform.h5`` (the whole chain), ``warp.nii.gz`` and
``inverse_warp.nii.gz`` (vector NIfTI as ANTs writes its warps),
``affine.mat`` and ``jacobian.nii.gz``; plus ``atlas_in_subject.nii.gz`` and
``subject_in_template.nii.gz``.

Data: ``antspy`` (``mni.nii.gz``, its atlas ``mnia.nii.gz``, ``ch2.nii.gz``).

    python examples/atlas_to_subject_deformable.py --data-root ../shared/data -o atlas-out
    python examples/atlas_to_subject_deformable.py --small --data-root ../shared/data   # 3 mm copies, seconds

The same from the shell::

    coregister register ch2.nii.gz mni.nii.gz -o atlas-out --preset syn --report
    coregister apply atlas-out/transform.h5 mnia.nii.gz --reference ch2.nii.gz -o atlas_in_subject.nii.gz \\
        --interpolation nearest
"""

from __future__ import annotations

import sys
import time

import numpy as np
import SimpleITK as sitk
from _common import dataset, parser, setup

import coregister as cr
from coregister.outputs import write_deformation


def shrunk(image: cr.SpatialImage, factor: int) -> cr.SpatialImage:
    """A bin-averaged copy (each coarse voxel the mean of the ``factor``³ it covers)."""
    return cr.SpatialImage.from_sitk(sitk.BinShrink(image.to_sitk(), [factor] * image.ndim))


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], default_out="atlas-out")
    p.add_argument("--preset", default="syn", help="syn (default) or bspline")
    args = p.parse_args(argv)
    setup(args)
    antspy = dataset("antspy", args)
    subject, template, atlas = (cr.read(antspy / name) for name in ("ch2.nii.gz", "mni.nii.gz", "mnia.nii.gz"))
    if args.small:
        subject, template = shrunk(subject, 3), shrunk(template, 3)
        atlas = cr.apply(cr.Translation([0.0, 0.0, 0.0]), atlas, reference=template, interpolation="nearest")
    started = time.perf_counter()
    result = cr.register(subject, template, preset=args.preset)  # subject points -> template points
    took = time.perf_counter() - started
    result.transform.save(args.out / "transform.h5")
    written = write_deformation(args.out, result.transform, subject)
    labels = cr.apply(result.transform, atlas, reference=subject, interpolation="nearest")
    cr.write(labels, args.out / "atlas_in_subject.nii.gz")
    back = cr.apply(result.transform.inverse(), subject, reference=template)
    cr.write(back, args.out / "subject_in_template.nii.gz")
    measures = result.quality.measures
    print(f"{args.preset}: {result.verdict.value} in {took:.1f} s; Jacobian determinant {measures['min_jacobian']:.3f} to "
          f"{measures['max_jacobian']:.3f} on the subject's grid, folding fraction {measures['folding_fraction']:.2e}")
    inverse = result.transform.inverse()
    fields = [t for t in getattr(inverse, "transforms", (inverse,)) if isinstance(t, cr.DisplacementField)]
    if fields and fields[0].inverse_residual_mm is not None:
        print(f"inverse field residual: mean {fields[0].inverse_residual_mm[0]:.4f} mm")
    found = np.unique(labels.array)
    print(f"atlas labels in the subject: {found.size - 1} of {np.unique(atlas.array).size - 1}")
    print("wrote " + ", ".join(str(p.name) for p in [*written, args.out / "transform.h5"]))
    return 0 if result.passed else 3


if __name__ == "__main__":
    sys.exit(main())
