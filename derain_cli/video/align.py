"""Align a neighbouring frame onto the current one, and say where that alignment can be trusted.

Everything here runs on small copies of the derained frames (long side at most ``flow_side``;
sizes in pixels below are pixels of these copies). Each frame is analysed once (:func:`analyse`):

- ``grey``: uint8 luma, eroded 3x3, so thin bright streaks the model left barely move the flow;
- ``coarse``: RGB eroded 5x5 (rain gone, shapes kept), for the coarse agreement check;
- ``detail``: luma minus its Gaussian blur (sigma 4): texture and edges, for the fine check.

For a neighbour s of frame t there are two candidate alignments, both from OpenCV's DIS optical
flow t -> s (:func:`candidates`):

- **camera**: a similarity transform fitted to that flow with RANSAC, so rain and moving objects
  are outliers. It is exact for a still or panning camera, where the flow itself wobbles wherever
  rain is the only texture. Trusted where the local flow follows it (within
  :data:`CAMERA_FOLLOW` px), so it never moves an object that moves on its own.
- **local**: the flow itself. Trusted where the flow s -> t brings each pixel back (within
  :data:`ROUND_TRIP` px: not occluded) and away from motion boundaries (flow gradient above
  :data:`BOUNDARY_GRADIENT`, widened by :data:`BOUNDARY_MARGIN` px).

Both must then pass two agreement checks against frame t. Coarse: the mean over 9x9 of the
eroded RGB difference is below ``tolerance`` (catches a wrong object or colour, blind to rain and
fine texture). Fine: in a 7x7 window, fewer than :data:`DETAIL_FRACTION` of the pixels differ in
``detail`` by more than :data:`DETAIL_THRESHOLD` (catches texture out of place; a few streaks do
not fill the window). Rain in frame t itself makes every neighbour fail the fine check at that
spot, so a camera-aligned sample also passes it where it agrees with another neighbour's
camera-aligned sample (:func:`choose`): neighbours agree among themselves where t has rain, but a
moving object seen in the wrong place differs from frame to frame. The camera alignment is used
where trusted, else the local one, else none (the pixel keeps frame t's own value).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Smallest side (px) of an analysis copy that optical flow is computed on.
MIN_SIDE = 16
#: Erosion radius before the flow (px of the analysis size): thin bright streaks vanish.
FLOW_EROSION = 1
#: Erosion radius of the coarse check's pictures, and its box side.
COARSE_EROSION = 2
COARSE_BOX = 9
#: The fine check: detail differences above this count as disagreeing pixels ...
DETAIL_THRESHOLD = 0.05
#: ... in a window of this side, where they must stay below this fraction.
DETAIL_WINDOW = 7
DETAIL_FRACTION = 0.6
#: Gaussian sigma (px) that separates detail from shading.
DETAIL_SIGMA = 4.0
#: Forward-backward round trip allowed to the local flow (px).
ROUND_TRIP = 1.0
#: Flow gradient (px per px) that marks a motion boundary, and how far it is widened (px).
BOUNDARY_GRADIENT = 0.15
BOUNDARY_MARGIN = 3
#: How close (px) the local flow must stay to the camera motion for the camera alignment.
CAMERA_FOLLOW = 1.0
#: Spacing (px) of the flow samples the camera motion is fitted to, and RANSAC's inlier distance.
CAMERA_GRID = 8
CAMERA_INLIER = 1.0

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_THIRDS = np.full((1, 3), 1.0 / 3.0, dtype=np.float32)


@dataclass
class FrameAnalysis:
    """A derained frame as the alignment sees it, at the analysis size."""

    grey: np.ndarray  # uint8 (h, w)
    coarse: np.ndarray  # float32 (h, w, 3)
    detail: np.ndarray  # float32 (h, w)
    probe: np.ndarray  # float32 (h, w, 4): coarse and detail together, warped in one pass


@dataclass
class Candidate:
    """One way of aligning a neighbour: where each pixel of frame t is found in it."""

    x: np.ndarray  # float32 (h, w): column in the neighbour
    y: np.ndarray  # float32 (h, w): row in the neighbour
    trusted: np.ndarray  # bool (h, w), before the fine check
    detail: np.ndarray  # float32 (h, w): the neighbour's detail, aligned


@dataclass
class Alignment:
    """The chosen alignment of one neighbour: displacement and validity, at the analysis size."""

    displacement: np.ndarray  # float32 (h, w, 2)
    valid: np.ndarray  # bool (h, w)


def analysis_size(height: int, width: int, flow_side: int) -> tuple[int, int] | None:
    """(w, h) of the analysis copies: the frame scaled to at most ``flow_side`` on its long side;
    None when a side would be under :data:`MIN_SIDE` (DIS flow needs more: tiny or very
    elongated frames are not aligned)."""
    scale = min(1.0, flow_side / max(height, width))
    size = round(width * scale), round(height * scale)
    return size if min(size) >= MIN_SIDE else None


def analyse(rgb: np.ndarray, size: tuple[int, int]) -> FrameAnalysis:
    """The analysis of a float32 ``(H, W, 3)`` frame in [0, 1], at ``size`` (W, H)."""
    small = rgb if rgb.shape[1::-1] == size else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    small = np.ascontiguousarray(small, dtype=np.float32)
    luma = cv2.transform(small, _LUMA[None])
    grey = np.clip(luma * 255.0 + 0.5, 0, 255).astype(np.uint8)
    coarse = _erode(small, COARSE_EROSION)
    detail = luma - cv2.GaussianBlur(luma, (0, 0), DETAIL_SIGMA)
    probe = np.ascontiguousarray(np.concatenate([coarse, detail[..., None]], axis=2))
    return FrameAnalysis(_erode(grey, FLOW_EROSION), coarse, detail, probe)


def camera_motion(flow: np.ndarray) -> np.ndarray | None:
    """The 2x3 similarity transform that best explains ``flow`` (RANSAC), or None."""
    height, width = flow.shape[:2]
    step = CAMERA_GRID
    ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    source = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    if len(source) < 3:
        return None
    target = source + flow[ys.ravel(), xs.ravel()]
    matrix, _inliers = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=CAMERA_INLIER
    )
    return None if matrix is None else matrix.astype(np.float32)


def candidates(
    anchor: FrameAnalysis,
    other: FrameAnalysis,
    flow: np.ndarray,
    back: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    tolerance: float,
) -> tuple[Candidate | None, Candidate]:
    """(camera, local) candidates for ``other`` onto ``anchor``, from the flows anchor -> other
    (``flow``) and other -> anchor (``back``); ``grid`` is the analysis size's pixel grid."""
    xs, ys = grid
    flow_x, flow_y = flow[..., 0], flow[..., 1]
    local_x, local_y = xs + flow_x, ys + flow_y
    returned = _remap(back, local_x, local_y)
    loop_x, loop_y = flow_x + returned[..., 0], flow_y + returned[..., 1]
    trusted = _inside(local_x, local_y) & (loop_x * loop_x + loop_y * loop_y < ROUND_TRIP**2)
    trusted &= ~_motion_boundaries(flow)
    local = _checked(anchor, other, local_x, local_y, trusted, tolerance)

    matrix = camera_motion(flow)
    if matrix is None:
        return None, local
    camera_x = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    camera_y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    off_x, off_y = local_x - camera_x, local_y - camera_y
    follows = off_x * off_x + off_y * off_y < CAMERA_FOLLOW**2
    trusted = _inside(camera_x, camera_y) & follows
    return _checked(anchor, other, camera_x, camera_y, trusted, tolerance), local


def _checked(
    anchor: FrameAnalysis,
    other: FrameAnalysis,
    x: np.ndarray,
    y: np.ndarray,
    trusted: np.ndarray,
    tolerance: float,
) -> Candidate:
    """The candidate at ``x, y``, trusted where also the coarse check passes."""
    warped = _remap(other.probe, x, y)
    coarse = np.ascontiguousarray(warped[..., :3])
    difference = cv2.transform(cv2.absdiff(anchor.coarse, coarse), _THIRDS)
    agree = cv2.blur(difference, (COARSE_BOX, COARSE_BOX)) < tolerance
    return Candidate(x, y, trusted & agree, np.ascontiguousarray(warped[..., 3]))


def choose(
    anchor: FrameAnalysis,
    cameras: list[Candidate | None],
    locals_: list[Candidate],
    grid: tuple[np.ndarray, np.ndarray],
) -> list[Alignment]:
    """One :class:`Alignment` per neighbour: camera where it passes the fine check (against frame
    t, or against another neighbour's trusted camera alignment), else local where it passes."""
    xs, ys = grid
    chosen = []
    for index, (camera, local) in enumerate(zip(cameras, locals_, strict=True)):
        use_local = local.trusted & _details_agree(local.detail, anchor.detail)
        x, y, valid = local.x, local.y, use_local
        if camera is not None:
            fine = _details_agree(camera.detail, anchor.detail)
            for other_index, other in enumerate(cameras):
                if other is not None and other_index != index:
                    fine |= other.trusted & _details_agree(camera.detail, other.detail)
            use_camera = camera.trusted & fine
            x = np.where(use_camera, camera.x, local.x)
            y = np.where(use_camera, camera.y, local.y)
            valid = use_camera | use_local
        displacement = np.stack([x - xs, y - ys], axis=2).astype(np.float32)
        chosen.append(Alignment(displacement, valid))
    return chosen


def _details_agree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    differing = (np.abs(a - b) > DETAIL_THRESHOLD).astype(np.float32)
    return cv2.blur(differing, (DETAIL_WINDOW, DETAIL_WINDOW)) < DETAIL_FRACTION


def _motion_boundaries(flow: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(flow, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(flow, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    energy = (gx * gx + gy * gy).astype(np.float32)  # (h, w, 2): per flow component
    squared = cv2.transform(energy, np.ones((1, 2), np.float32))
    steep = (squared > BOUNDARY_GRADIENT**2).astype(np.uint8)
    return _dilate(steep, BOUNDARY_MARGIN).astype(bool)


def _inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    height, width = x.shape
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def _remap(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return cv2.remap(image, x, y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _erode(image: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(image, kernel)


def _dilate(image: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(image, kernel)
