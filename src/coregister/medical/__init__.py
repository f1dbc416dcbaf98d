"""Medical workflows: what registering MRI, CT and other patient images needs beyond the pipeline.

>>> from coregister import medical
>>> medical.__all__  # doctest: +NORMALIZE_WHITESPACE
['Evaluation', 'HalfwayResult', 'JacobianSummary', 'LabelScore', 'Landmarks', 'MotionResult', 'PointError', 'dice',
 'dice_per_label', 'evaluate', 'framewise_displacement', 'halfway', 'hausdorff_per_label', 'jaccard_per_label',
 'jacobian_summary', 'landmark_errors', 'motion', 'motion_parameters', 'read_landmarks', 'tre', 'write_landmarks']

This package holds what is specific to patient images and builds on the
pipeline, so it may register, resample and read (DICOM series are read and
written by :mod:`coregister.io`; label maps are carried through a transform
by :func:`coregister.apply` with ``interpolation="nearest"`` or
``"label-gaussian"``, landmarks by :func:`coregister.transform_points`):

* :mod:`~coregister.medical.landmarks`: :class:`Landmarks` (labelled LPS
  points) read and written as CSV, 3D Slicer ``.fcsv`` / ``.mrk.json`` (RAS
  or LPS, as the file states) and elastix point files (:func:`read_landmarks`,
  :func:`write_landmarks`).
* :mod:`~coregister.medical.overlap`: label maps on one grid compared
  label by label: :func:`dice_per_label`, :func:`jaccard_per_label`,
  :func:`hausdorff_per_label` (HD95 from SimpleITK distance maps).
* :mod:`~coregister.medical.evaluate`: accuracy against known
  correspondences and the transform's regularity, the measures Learn2Reg
  reports: :func:`evaluate` gives an :class:`Evaluation` (Dice, Jaccard and
  HD95 per label, the target registration error of each landmark, the
  folding fraction and the spread of the log-Jacobian); the parts alone:
  :func:`tre`, :func:`landmark_errors`, :func:`jacobian_summary`;
* :mod:`~coregister.medical.motion_correction`: head-motion correction of a
  4D series (fMRI, DCE, DWI): :func:`motion` realigns every volume to a
  reference and gives the six motion parameters per volume
  (:func:`motion_parameters`, fMRIPrep's columns) and the framewise
  displacement (:func:`framewise_displacement`) in a :class:`MotionResult`;
* :mod:`~coregister.medical.longitudinal`: a baseline and a follow-up in a
  halfway space (:func:`halfway`, a :class:`HalfwayResult`): registered both
  ways, the symmetric midpoint map split in two halves, both images
  resampled once, neither time point favoured.

Every transform maps fixed-space points to moving space (ITK's convention):
fixed-space landmarks map forward, moving-space landmarks need ``inverse=True``.
"""

from __future__ import annotations

from coregister.medical.evaluate import (
    Evaluation,
    JacobianSummary,
    LabelScore,
    PointError,
    evaluate,
    jacobian_summary,
    landmark_errors,
    tre,
)
from coregister.medical.landmarks import Landmarks, read_landmarks, write_landmarks
from coregister.medical.longitudinal import HalfwayResult, halfway
from coregister.medical.motion_correction import MotionResult, framewise_displacement, motion, motion_parameters
from coregister.medical.overlap import dice, dice_per_label, hausdorff_per_label, jaccard_per_label

__all__ = [
    "Evaluation",
    "HalfwayResult",
    "JacobianSummary",
    "LabelScore",
    "Landmarks",
    "MotionResult",
    "PointError",
    "dice",
    "dice_per_label",
    "evaluate",
    "framewise_displacement",
    "halfway",
    "hausdorff_per_label",
    "jaccard_per_label",
    "jacobian_summary",
    "landmark_errors",
    "motion",
    "motion_parameters",
    "read_landmarks",
    "tre",
    "write_landmarks",
]
