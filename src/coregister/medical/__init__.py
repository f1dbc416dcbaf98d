"""Medical workflows: what registering MRI, CT and other patient images needs beyond the pipeline.

>>> from coregister import medical
>>> medical.__all__  # doctest: +NORMALIZE_WHITESPACE
['HalfwayResult', 'MotionResult', 'dice', 'dice_per_label', 'framewise_displacement', 'halfway', 'landmark_errors',
 'motion', 'motion_parameters', 'tre']

This package holds what is specific to patient images and builds on the
pipeline, so it may register, resample and read (DICOM series are read and
written by :mod:`coregister.io`; labels and landmarks are carried through a
transform by :func:`coregister.apply` and :func:`coregister.transform_points`):

* :mod:`~coregister.medical.evaluate`: accuracy against known
  correspondences, the target registration error of landmarks
  (:func:`tre`, :func:`landmark_errors`, in mm) and the Dice overlap of
  label maps (:func:`dice`, :func:`dice_per_label`);
* :mod:`~coregister.medical.motion_correction`: head-motion correction of a
  4D series (fMRI, DCE, DWI): :func:`motion` realigns every volume to a
  reference and gives the six motion parameters per volume
  (:func:`motion_parameters`, fMRIPrep's columns) and the framewise
  displacement (:func:`framewise_displacement`) in a :class:`MotionResult`;
* :mod:`~coregister.medical.longitudinal`: a baseline and a follow-up in a
  halfway space (:func:`halfway`, a :class:`HalfwayResult`): registered both
  ways, the symmetric midpoint map split in two halves, both images
  resampled once, neither time point favoured.

Every transform maps fixed-space points to moving space (ITK's convention).
"""

from __future__ import annotations

from coregister.medical.evaluate import dice, dice_per_label, landmark_errors, tre
from coregister.medical.longitudinal import HalfwayResult, halfway
from coregister.medical.motion_correction import MotionResult, framewise_displacement, motion, motion_parameters

__all__ = ["HalfwayResult", "MotionResult", "dice", "dice_per_label", "framewise_displacement", "halfway",
           "landmark_errors", "motion", "motion_parameters", "tre"]
