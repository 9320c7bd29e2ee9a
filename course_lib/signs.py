"""Synthetic GTSRB-like traffic signs: a procedural, deterministic, offline stand-in for GTSRB.

The German Traffic Sign Recognition Benchmark (GTSRB) has 43 classes. This module draws a
simplified but recognisable version of each of them (same class ids, see `CLASS_NAMES`) and
then buries the sign under the same kinds of nuisances that make real GTSRB hard for pixel-space
clustering: scale, position, rotation, perspective, blur, cluttered backgrounds, dark and
low-contrast exposures, colour casts and noise.

How an image is made
--------------------
1. A clean *template* per class is drawn with PIL ImageDraw at `SUPERSAMPLE` times the working
   resolution and downsampled (anti-aliasing); it is RGBA, the alpha channel is the sign's shape.
   One function per sign family draws it (`_draw_speed_limit`, `_draw_warning`, ...).
2. A background is drawn at the working resolution (2x the output size): a colour gradient,
   sometimes a sky/ground split, a few random shapes (rectangles, ellipses, poles) and a texture.
3. The template is warped onto the background with one random projective transform
   (scale, offset, in-plane rotation and a mild perspective jitter of the four corners).
4. The picture is box-downsampled to the output size and blurred.
5. Photometric nuisances are applied to the whole batch at once (colour cast, contrast,
   brightness, noise).

Mirror-image classes (19/20, 33/34, 36/37, 38/39) are drawn once and flipped, so they are exact
mirror images: horizontal flips are *not* label-preserving augmentations for this data.

Public API: `make_signs(n, image_size, seed)`, `render_template(class_id, size)`,
`N_CLASSES`, `CLASS_NAMES`.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .data import GTSRB_CLASS_NAMES

N_CLASSES = 43

CLASS_NAMES = GTSRB_CLASS_NAMES  # the same class ids as GTSRB

# --- drawing constants ---------------------------------------------------------------------------
SUPERSAMPLE = 4  # templates are drawn at 4x their stored size, then box-downsampled
WORK_FACTOR = 2  # images are composed at 2x the output size, then box-downsampled

RED = (200, 20, 30)
WHITE = (245, 245, 245)
BLACK = (15, 15, 15)
GREY = (120, 120, 120)
DARK_GREY = (85, 85, 85)  # struck-out pictograms of the "end of no passing" signs
BLUE = (20, 70, 170)
YELLOW = (250, 190, 0)
AMBER = (245, 170, 0)
GREEN = (20, 160, 60)
TRANSPARENT = (128, 128, 128, 0)  # grey, so edge pixels do not darken when resampled

RING_INNER = 0.78  # inner radius of the red ring of prohibitory signs (outer radius = 1)
SPEED_DIGIT_HEIGHT = 0.86  # height of the speed numbers
TRIANGLE_BORDER = 0.15  # width of the red border of warning / yield triangles
SQRT3 = math.sqrt(3.0)

SPEED_TEXT = {0: "20", 1: "30", 2: "50", 3: "60", 4: "70", 5: "80", 7: "100", 8: "120"}
MIRROR_OF = {20: 19, 34: 33, 37: 36, 39: 38}  # class -> the class it is the mirror image of

# --- nuisance constants (the ranges a sign is randomised over) ----------------------------------
SCALE_RANGE = (0.5, 0.95)  # sign width as a fraction of the frame
SCALE_SKEW = 0.5  # < 1 favours large signs (GTSRB crops are mostly sign)
MAX_OFFSET = 0.6  # how much of the free margin the sign centre may use
MAX_ROTATION_DEG = 12.0
PERSPECTIVE_JITTER = 0.07  # corner displacement, as a fraction of the sign's half-size
BLUR_RANGE = (0.0, 1.2)  # standard deviation of the Gaussian blur, in output pixels
MIN_BLUR = 0.15  # below this, blurring is skipped
BRIGHTNESS_RANGE = (0.35, 1.3)  # multiplicative gain, sampled log-uniformly
CONTRAST_RANGE = (0.5, 1.1)
COLOUR_CAST = 0.15  # per-channel gain in [1 - c, 1 + c]
NOISE_RANGE = (0.0, 0.025)  # std of additive Gaussian noise, on the [0, 1] scale
MAX_CLUTTER_SHAPES = 4
LOUD_COLOUR_P = 0.12  # share of clutter colours drawn uniformly (not from the palette)
TEXTURE_OCTAVES = ((5, 40.0), (11, 25.0))  # (grid cells, max amplitude in grey levels) of the noise
CHUNK = 512  # images per batch for the vectorised steps


# =================================================================================================
# Drawing helpers
# =================================================================================================
class _Pen:
    """Draws on a square RGBA canvas in unit coordinates.

    (0, 0) is the canvas centre, x points right, y points down, +-1 are the canvas edges.
    `sub(cx, cy, scale)` gives a pen for a sub-frame (used for pictograms).
    """

    def __init__(self, img: Image.Image, cx: float = 0.0, cy: float = 0.0, scale: float = 1.0):
        self.img, self.draw = img, ImageDraw.Draw(img)
        self.size = img.size[0]
        self.cx, self.cy, self.scale = cx, cy, scale

    def sub(self, cx: float, cy: float, scale: float) -> "_Pen":
        return _Pen(self.img, self.cx + self.scale * cx, self.cy + self.scale * cy, self.scale * scale)

    def px(self, x: float, y: float) -> tuple[float, float]:
        h = self.size / 2
        return ((self.cx + self.scale * x + 1) * h, (self.cy + self.scale * y + 1) * h)

    def length(self, d: float) -> float:
        return d * self.scale * self.size / 2

    def polygon(self, pts, fill) -> None:
        self.draw.polygon([self.px(x, y) for x, y in pts], fill=fill)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill) -> None:
        (x0, y0), (x1, y1) = self.px(x - rx, y - ry), self.px(x + rx, y + ry)
        self.draw.ellipse([x0, y0, x1, y1], fill=fill)

    def disc(self, x: float, y: float, r: float, fill) -> None:
        self.ellipse(x, y, r, r, fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill) -> None:
        (a, b), (c, d) = self.px(x0, y0), self.px(x1, y1)
        self.draw.rectangle([a, b, c, d], fill=fill)

    def line(self, pts, width: float, fill, round_caps: bool = True) -> None:
        pix = [self.px(x, y) for x, y in pts]
        w = max(1, int(round(self.length(width))))
        self.draw.line(pix, fill=fill, width=w, joint="curve")
        if round_caps:
            for x, y in (pts[0], pts[-1]):
                self.disc(x, y, width / 2, fill)

    def text(self, s: str, x: float, y: float, w: float, h: float, fill, bold: float = 0.08) -> None:
        """Write `s` stretched into the box of width w, height h centred at (x, y)."""
        font = _font()
        # emboldening stroke: FreeType fonts only (the bitmap fallback font is bold enough)
        stroke = {"stroke_width": int(bold * font.size)} if isinstance(font, ImageFont.FreeTypeFont) else {}
        x0, y0, x1, y1 = font.getbbox(s, **stroke)
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(mask).text((-x0, -y0), s, font=font, fill=255, **stroke)
        (a, b), (c, d) = self.px(x - w / 2, y - h / 2), self.px(x + w / 2, y + h / 2)
        box = (int(round(a)), int(round(b)), int(round(c)), int(round(d)))
        mask = mask.resize((box[2] - box[0], box[3] - box[1]), Image.LANCZOS)
        self.img.paste(Image.new(self.img.mode, mask.size, fill), box[:2], mask)


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    """PIL's built-in font (no font file needed); scalable when Pillow has FreeType (>= 10.1)."""
    try:
        return ImageFont.load_default(size=120)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: small bitmap font
        return ImageFont.load_default()


def _bezier(p0, p1, p2, n: int = 20) -> list[tuple[float, float]]:
    """Points of the quadratic Bezier curve p0 -> p2 with control point p1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t**2 * np.array(p2)
    return [tuple(p) for p in pts]


def _arrow(pen: _Pen, pts, width: float, head: float, fill) -> None:
    """A polyline shaft through `pts` ending in a triangular arrow head whose tip is pts[-1]."""
    (xa, ya), (xb, yb) = pts[-2], pts[-1]
    d = math.hypot(xb - xa, yb - ya)
    ux, uy = (xb - xa) / d, (yb - ya) / d  # direction of the last segment
    bx, by = xb - ux * head, yb - uy * head  # base of the head
    pen.line(list(pts[:-1]) + [(bx + ux * 0.02, by + uy * 0.02)], width, fill, round_caps=False)
    pen.disc(*pts[0], width / 2, fill)
    half = head * 0.85
    pen.polygon([(xb, yb), (bx - uy * half, by + ux * half), (bx + uy * half, by - ux * half)], fill)


def _triangle(point_up: bool, inset: float = 0.0) -> list[tuple[float, float]]:
    """Equilateral triangle filling the canvas width, shrunk by `inset` (perpendicular distance)."""
    h = SQRT3  # height of a triangle with side 2
    top, bottom = -h / 2, h / 2
    pts = [(0.0, top), (1.0, bottom), (-1.0, bottom)]
    cy = bottom - h / 3  # centroid
    r = h / 3  # inradius
    k = (r - inset) / r
    pts = [(x * k, cy + (y - cy) * k) for x, y in pts]
    return pts if point_up else [(x, -y) for x, y in pts]


# =================================================================================================
# Pictograms (local coordinates: roughly [-1, 1]^2, black unless stated)
# =================================================================================================
def _car_rear(pen: _Pen, x: float, y: float, s: float, fill) -> None:
    """A car seen from behind, centred at (x, y), width ~s."""
    pen.rect(x - 0.5 * s, y - 0.1 * s, x + 0.5 * s, y + 0.35 * s, fill)
    pen.polygon([(x - 0.42 * s, y - 0.08 * s), (x - 0.3 * s, y - 0.5 * s),
                 (x + 0.3 * s, y - 0.5 * s), (x + 0.42 * s, y - 0.08 * s)], fill)
    pen.rect(x - 0.45 * s, y + 0.3 * s, x - 0.22 * s, y + 0.55 * s, fill)
    pen.rect(x + 0.22 * s, y + 0.3 * s, x + 0.45 * s, y + 0.55 * s, fill)


def _truck_rear(pen: _Pen, x: float, y: float, s: float, fill) -> None:
    """A lorry seen from behind: a tall box on wheels."""
    pen.rect(x - 0.52 * s, y - 0.9 * s, x + 0.52 * s, y + 0.35 * s, fill)
    pen.rect(x - 0.45 * s, y + 0.3 * s, x - 0.2 * s, y + 0.55 * s, fill)
    pen.rect(x + 0.2 * s, y + 0.3 * s, x + 0.45 * s, y + 0.55 * s, fill)


def _truck_side(pen: _Pen, fill) -> None:
    """A lorry seen from the side, cab to the right."""
    pen.rect(-0.8, -0.4, 0.25, 0.2, fill)  # cargo box
    pen.polygon([(0.32, 0.2), (0.32, -0.25), (0.62, -0.25), (0.8, 0.0), (0.8, 0.2)], fill)  # cab
    pen.polygon([(0.4, -0.18), (0.58, -0.18), (0.7, -0.02), (0.4, -0.02)], WHITE)  # window
    for wx in (-0.55, -0.25, 0.55):
        pen.disc(wx, 0.28, 0.13, fill)


def _stick_figure(pen: _Pen, x: float, y: float, s: float, stride: float, fill) -> None:
    """A walking person of height ~2s whose feet are at y + s."""
    w = 0.26 * s
    pen.disc(x + 0.05 * s, y - 0.8 * s, 0.23 * s, fill)  # head
    hip = (x - 0.05 * s, y + 0.15 * s)
    pen.line([(x + 0.05 * s, y - 0.5 * s), hip], 1.4 * w, fill)  # body
    pen.line([hip, (x - 0.45 * stride * s, y + s)], w, fill)  # back leg
    pen.line([hip, (x + 0.1 * s, y + 0.55 * s), (x + 0.45 * stride * s, y + s)], w, fill)  # front leg
    pen.line([(x + 0.35 * s, y + 0.05 * s), (x + 0.05 * s, y - 0.4 * s), (x - 0.35 * s, y - 0.05 * s)],
             0.8 * w, fill)  # arms


def _pict_right_of_way(pen: _Pen) -> None:
    pen.polygon([(-0.12, -0.95), (0.12, -0.95), (0.2, 0.9), (-0.2, 0.9)], BLACK)
    pen.rect(-0.7, -0.08, 0.7, 0.14, BLACK)


def _pict_exclamation(pen: _Pen) -> None:
    pen.polygon([(-0.17, -0.95), (0.17, -0.95), (0.08, 0.35), (-0.08, 0.35)], BLACK)
    pen.disc(0.0, 0.7, 0.16, BLACK)


def _pict_curve_left(pen: _Pen) -> None:
    pts = [(0.25, 0.95), (0.25, 0.2)] + _bezier((0.25, 0.2), (0.25, -0.35), (-0.45, -0.55), 12)[1:]
    _arrow(pen, pts, 0.26, 0.4, BLACK)


def _pict_double_curve(pen: _Pen) -> None:
    pts = (_bezier((0.35, 0.95), (0.4, 0.35), (0.0, 0.15), 10)
           + _bezier((0.0, 0.15), (-0.45, -0.05), (-0.3, -0.55), 10)[1:]
           + [(-0.3, -0.6), (-0.05, -0.98)])
    pen.line(pts[:-2], 0.27, BLACK)
    _arrow(pen, [(-0.32, -0.45), (-0.05, -0.98)], 0.27, 0.42, BLACK)


def _pict_bumps(pen: _Pen) -> None:
    pen.rect(-0.95, 0.45, 0.95, 0.72, BLACK)
    for bx in (-0.45, 0.45):
        pen.draw.pieslice([*pen.px(bx - 0.4, 0.05), *pen.px(bx + 0.4, 0.85)], 180, 360, fill=BLACK)


def _pict_slippery(pen: _Pen) -> None:
    _car_rear(pen, 0.0, -0.45, 0.8, BLACK)
    for sx in (-0.3, 0.3):
        pts = [(sx + 0.18 * math.sin(t * 2.5 * math.pi), 0.15 + 0.8 * t) for t in np.linspace(0, 1, 14)]
        pen.line(pts, 0.13, BLACK)


def _pict_narrows_right(pen: _Pen) -> None:
    pen.line([(-0.5, 0.95), (-0.5, -0.95)], 0.22, BLACK)
    pen.line([(0.6, 0.95), (0.6, 0.3), (0.1, -0.25), (0.1, -0.95)], 0.22, BLACK)


def _pict_road_work(pen: _Pen) -> None:
    pen.disc(-0.1, -0.55, 0.17, BLACK)  # head
    pen.line([(-0.15, -0.3), (-0.45, 0.3)], 0.28, BLACK)  # body
    pen.line([(-0.45, 0.3), (-0.2, 0.9)], 0.16, BLACK)  # legs
    pen.line([(-0.45, 0.3), (-0.75, 0.9)], 0.16, BLACK)
    pen.line([(-0.2, -0.15), (0.25, 0.1)], 0.12, BLACK)  # arms
    pen.line([(-0.1, -0.2), (0.45, 0.65)], 0.09, BLACK)  # shovel handle
    pen.polygon([(0.3, 0.9), (0.55, 0.45), (0.95, 0.9)], BLACK)  # heap


def _pict_traffic_signals(pen: _Pen) -> None:
    pen.rect(-0.38, -0.95, 0.38, 0.95, BLACK)
    for y, colour in ((-0.6, RED), (0.0, AMBER), (0.6, GREEN)):
        pen.disc(0.0, y, 0.24, colour)


def _pict_pedestrian(pen: _Pen) -> None:
    _stick_figure(pen, 0.0, -0.05, 0.9, 1.0, BLACK)


def _pict_children(pen: _Pen) -> None:
    _stick_figure(pen, -0.35, 0.0, 0.9, 1.0, BLACK)
    _stick_figure(pen, 0.45, 0.28, 0.62, 1.0, BLACK)


def _pict_bicycle(pen: _Pen) -> None:
    for wx in (-0.5, 0.5):
        pen.disc(wx, 0.45, 0.38, BLACK)
        pen.disc(wx, 0.45, 0.25, WHITE)
    pen.line([(-0.5, 0.45), (-0.05, 0.45), (0.3, -0.1), (-0.25, -0.1), (-0.5, 0.45)], 0.13, BLACK)
    pen.line([(0.5, 0.45), (0.3, -0.3), (0.15, -0.35)], 0.13, BLACK)  # fork and handlebar
    pen.line([(-0.05, 0.45), (-0.25, -0.25), (-0.4, -0.25)], 0.13, BLACK)  # seat post


def _pict_snowflake(pen: _Pen) -> None:
    for k in range(3):
        a = math.pi / 2 + k * math.pi / 3
        c, s = math.cos(a), math.sin(a)
        pen.line([(-0.85 * c, -0.85 * s), (0.85 * c, 0.85 * s)], 0.15, BLACK)
        for sign in (-1, 1):  # little branches near both ends
            bx, by = sign * 0.55 * c, sign * 0.55 * s
            for b in (-1, 1):
                a2 = a + b * math.pi / 4
                pen.line([(bx, by), (bx + sign * 0.28 * math.cos(a2), by + sign * 0.28 * math.sin(a2))],
                         0.12, BLACK)


def _pict_deer(pen: _Pen) -> None:
    pen.polygon([(-0.7, 0.2), (-0.3, -0.15), (0.35, -0.35), (0.5, -0.1), (0.0, 0.2), (-0.55, 0.4)], BLACK)
    pen.line([(0.35, -0.3), (0.6, -0.65)], 0.16, BLACK)  # neck
    pen.ellipse(0.68, -0.68, 0.16, 0.1, BLACK)  # head
    pen.line([(0.55, -0.75), (0.45, -1.0), (0.3, -1.05)], 0.06, BLACK)  # antlers
    pen.line([(0.45, -1.0), (0.55, -1.15)], 0.06, BLACK)
    pen.line([(0.3, -0.2), (0.7, 0.15), (0.9, 0.05)], 0.13, BLACK)  # front legs (leaping)
    pen.line([(-0.55, 0.3), (-0.8, 0.75), (-0.95, 0.85)], 0.13, BLACK)  # hind legs
    pen.line([(-0.4, 0.25), (-0.45, 0.75)], 0.13, BLACK)


WARNING_PICTOGRAMS = {
    11: _pict_right_of_way, 18: _pict_exclamation, 19: _pict_curve_left, 21: _pict_double_curve,
    22: _pict_bumps, 23: _pict_slippery, 24: _pict_narrows_right, 25: _pict_road_work,
    26: _pict_traffic_signals, 27: _pict_pedestrian, 28: _pict_children, 29: _pict_bicycle,
    30: _pict_snowflake, 31: _pict_deer,
}


# =================================================================================================
# Sign families (one function each; all draw on a transparent canvas through a _Pen)
# =================================================================================================
def _prohibitory_base(pen: _Pen) -> None:
    """White disc with a red ring."""
    pen.disc(0, 0, 1.0, RED)
    pen.disc(0, 0, RING_INNER, WHITE)


def _end_base(pen: _Pen) -> None:
    """White disc with a thin grey rim ("end of ..." signs)."""
    pen.disc(0, 0, 1.0, GREY)
    pen.disc(0, 0, 0.94, WHITE)


def _slash(pen: _Pen, width: float = 0.16, n_lines: int = 1, spacing: float = 0.2) -> None:
    """Diagonal black slash(es) from lower left to upper right, clipped to the disc."""
    radius = 0.88
    ux, uy = 1 / math.sqrt(2), -1 / math.sqrt(2)  # along the slash
    nx, ny = -uy, ux  # across the slash
    for k in range(n_lines):
        d = (k - (n_lines - 1) / 2) * spacing
        half = math.sqrt(max(radius**2 - d**2, 0.0))
        cx, cy = d * nx, d * ny
        pen.line([(cx - half * ux, cy - half * uy), (cx + half * ux, cy + half * uy)], width, BLACK,
                 round_caps=False)


def _draw_speed_limit(pen: _Pen, class_id: int) -> None:
    _prohibitory_base(pen)
    s = SPEED_TEXT[class_id]
    char_width = 0.54 if len(s) == 2 else 0.47
    pen.text(s, 0.0, 0.0, char_width * len(s), SPEED_DIGIT_HEIGHT, BLACK, bold=0.06)


def _draw_end_of_limit(pen: _Pen, class_id: int) -> None:
    """6: faint 80 with a slash; 32: several thin slashes only."""
    _end_base(pen)
    if class_id == 6:
        pen.text("80", 0.0, 0.0, 1.08, SPEED_DIGIT_HEIGHT, (165, 165, 165))
        _slash(pen, 0.16)
    else:
        _slash(pen, 0.06, n_lines=5)


def _draw_no_passing(pen: _Pen, class_id: int) -> None:
    """9: red car + black car; 10: red lorry + black car; 41/42: the same, greyed and struck out."""
    end = class_id in (41, 42)
    (_end_base if end else _prohibitory_base)(pen)
    left, right = (DARK_GREY, DARK_GREY) if end else (RED, BLACK)
    if class_id in (9, 41):
        _car_rear(pen, -0.34, 0.0, 0.6, left)
    else:
        _truck_rear(pen, -0.36, 0.1, 0.64, left)
    _car_rear(pen, 0.34, 0.0, 0.6, right)
    if end:
        _slash(pen, 0.045, n_lines=3, spacing=0.24)


def _draw_plain_prohibitory(pen: _Pen, class_id: int) -> None:
    """15: red ring, empty; 16: red ring with a lorry."""
    _prohibitory_base(pen)
    if class_id == 16:
        _truck_side(pen.sub(0, 0.05, 0.72), BLACK)


def _draw_warning(pen: _Pen, class_id: int) -> None:
    """White triangle, point up, red border, black pictogram."""
    pen.polygon(_triangle(True), RED)
    pen.polygon(_triangle(True, TRIANGLE_BORDER), WHITE)
    WARNING_PICTOGRAMS[class_id](pen.sub(0.0, 0.27, 0.45))


def _draw_priority(pen: _Pen, class_id: int) -> None:
    """Yellow diamond with a white border and a thin dark edge."""
    diamond = lambda r: [(0, -r), (r, 0), (0, r), (-r, 0)]  # noqa: E731
    pen.polygon(diamond(1.0), (60, 60, 60))
    pen.polygon(diamond(0.96), WHITE)
    pen.polygon(diamond(0.66), YELLOW)


def _draw_yield(pen: _Pen, class_id: int) -> None:
    """Inverted triangle, red border, white inside, no pictogram."""
    pen.polygon(_triangle(False), RED)
    pen.polygon(_triangle(False, TRIANGLE_BORDER + 0.04), WHITE)


def _draw_stop(pen: _Pen, class_id: int) -> None:
    """Red octagon, white rim, white STOP."""
    octagon = lambda r: [(r * math.cos(a), r * math.sin(a))  # noqa: E731
                         for a in np.pi / 8 + np.arange(8) * np.pi / 4]
    pen.polygon(octagon(1.0 / math.cos(math.pi / 8) * 0.98), WHITE)
    pen.polygon(octagon(0.93), RED)
    pen.text("STOP", 0.0, 0.0, 1.4, 0.5, WHITE, bold=0.06)


def _draw_no_entry(pen: _Pen, class_id: int) -> None:
    """Red disc with a white horizontal bar."""
    pen.disc(0, 0, 1.0, WHITE)
    pen.disc(0, 0, 0.95, RED)
    pen.rect(-0.68, -0.16, 0.68, 0.16, WHITE)


def _draw_mandatory(pen: _Pen, class_id: int) -> None:
    """Blue disc, thin white rim, white arrow(s). Left-hand classes are mirrored right-hand ones."""
    pen.disc(0, 0, 1.0, WHITE)
    pen.disc(0, 0, 0.94, BLUE)
    w, head = 0.2, 0.36
    if class_id == 33:  # turn right ahead
        pts = [(-0.3, 0.72), (-0.3, 0.05)] + _bezier((-0.3, 0.05), (-0.3, -0.3), (0.1, -0.3), 10)[1:]
        _arrow(pen, pts + [(0.72, -0.3)], w, head, WHITE)
    elif class_id == 35:  # ahead only
        _arrow(pen, [(0.0, 0.75), (0.0, -0.78)], w, head, WHITE)
    elif class_id == 36:  # straight or right
        _arrow(pen, [(-0.18, 0.75), (-0.18, -0.78)], w, head, WHITE)
        branch = _bezier((-0.18, 0.35), (-0.18, 0.0), (0.2, 0.0), 8)
        _arrow(pen, branch + [(0.75, 0.0)], w, head, WHITE)
    elif class_id == 38:  # keep right: arrow pointing down-right
        _arrow(pen, [(-0.45, -0.45), (0.5, 0.5)], w + 0.02, head + 0.04, WHITE)
    elif class_id == 40:  # roundabout: three counter-clockwise arrows
        r = 0.5
        for k in range(3):
            a0 = math.radians(100 + 120 * k)
            angles = np.linspace(a0, a0 + math.radians(78), 12)
            pts = [(r * math.cos(a), -r * math.sin(a)) for a in angles]
            _arrow(pen, pts, 0.17, 0.28, WHITE)
    else:
        raise ValueError(f"class {class_id} is not a right-hand mandatory sign")


SIGN_FAMILIES = {
    **{c: _draw_speed_limit for c in SPEED_TEXT},
    6: _draw_end_of_limit, 32: _draw_end_of_limit,
    9: _draw_no_passing, 10: _draw_no_passing, 41: _draw_no_passing, 42: _draw_no_passing,
    15: _draw_plain_prohibitory, 16: _draw_plain_prohibitory,
    12: _draw_priority, 13: _draw_yield, 14: _draw_stop, 17: _draw_no_entry,
    **{c: _draw_warning for c in WARNING_PICTOGRAMS},
    **{c: _draw_mandatory for c in (33, 35, 36, 38, 40)},
}


@functools.lru_cache(maxsize=None)
def _template_image(class_id: int, size: int) -> Image.Image:
    """The clean RGBA template of a class as a PIL image (cached)."""
    if not 0 <= class_id < N_CLASSES:
        raise ValueError(f"class_id must be in 0..{N_CLASSES - 1}, got {class_id}")
    if class_id in MIRROR_OF:
        return _template_image(MIRROR_OF[class_id], size).transpose(Image.FLIP_LEFT_RIGHT)
    big = Image.new("RGBA", (size * SUPERSAMPLE, size * SUPERSAMPLE), TRANSPARENT)
    SIGN_FAMILIES[class_id](_Pen(big), class_id)
    return big.reduce(SUPERSAMPLE)


def render_template(class_id: int, size: int = 64) -> np.ndarray:
    """Clean, centred sign of one class: uint8 array (size, size, 4), RGBA (alpha = sign shape)."""
    return np.asarray(_template_image(int(class_id), int(size))).copy()


# =================================================================================================
# Nuisances
# =================================================================================================
BG_PALETTE = np.array([  # natural colours: sky, cloud, foliage, road, walls, dusk; plus a few loud ones
    (110, 150, 200), (170, 195, 225), (200, 205, 210), (235, 235, 235), (60, 110, 50), (90, 130, 60),
    (40, 70, 35), (100, 100, 100), (70, 70, 75), (140, 135, 125), (160, 120, 90), (110, 80, 60),
    (30, 30, 35), (200, 170, 130), (220, 120, 80), (180, 40, 40), (30, 60, 140), (230, 200, 60),
], dtype=np.float64)


def _random_colours(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Colours (shape + (3,)) from the palette with jitter, or (sometimes) uniformly random."""
    palette = BG_PALETTE[rng.integers(len(BG_PALETTE), size=shape)] + rng.normal(0, 18, shape + (3,))
    loud = rng.uniform(0, 255, shape + (3,))
    pick = rng.random(shape)[..., None] < LOUD_COLOUR_P
    return np.clip(np.where(pick, loud, palette), 0, 255)


def _upsample_matrix(cells: int, size: int) -> np.ndarray:
    """(size, cells) matrix that linearly interpolates `cells` values onto `size` pixels."""
    pos = np.linspace(0, cells - 1, size)
    lo = np.minimum(np.floor(pos).astype(int), cells - 2)
    frac = pos - lo
    m = np.zeros((size, cells))
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _smooth_fields(rng: np.random.Generator, m: int, size: int) -> np.ndarray:
    """Per image: a colour gradient (bilinear between 4 corner colours) plus a coarse texture.

    Each layer is a small grid upsampled bilinearly (U @ grid @ U.T); stacking the grids on a
    block diagonal does all layers in one matrix product: sum_k U_k X_k U_k.T = U X U.T.
    """
    grids = [_random_colours(rng, (m, 2, 2))]  # the gradient's corner colours
    for cells, max_amp in TEXTURE_OCTAVES:  # value noise (foliage, clouds, asphalt)
        amp = rng.uniform(0, max_amp, (m, 1, 1, 1)) * (rng.random((m, 1, 1, 1)) < 0.7)
        tint = rng.uniform(0.6, 1.0, (m, 1, 1, 3))
        grids.append(amp * tint * rng.standard_normal((m, cells, cells, 1)))
    total = sum(g.shape[1] for g in grids)
    blocks = np.zeros((m, 3, total, total), dtype=np.float32)
    up = np.zeros((size, total), dtype=np.float32)
    k = 0
    for g in grids:
        c = g.shape[1]
        blocks[:, :, k:k + c, k:k + c] = np.moveaxis(g, -1, 1)
        up[:, k:k + c] = _upsample_matrix(c, size)
        k += c
    field = up @ blocks @ up.T  # (m, 3, size, size)
    return np.moveaxis(np.clip(field, 0, 255).astype(np.uint8), 1, -1)


def _backgrounds(m: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    """m cluttered backgrounds: a smooth field, maybe a sky/ground split, random shapes and poles."""
    fields = _smooth_fields(rng, m, size)
    # every random parameter is drawn up front, in bulk; the loop below only draws
    horizon = rng.random(m) < 0.5
    horizon_y = rng.uniform(0.2, 0.9, (m, 2)) * size
    horizon_colour = _random_colours(rng, (m,)).astype(int)
    n_shapes = rng.integers(1, MAX_CLUTTER_SHAPES + 1, m)
    kinds = rng.integers(3, size=(m, MAX_CLUTTER_SHAPES))
    start = rng.uniform(-0.3, 1.0, (m, MAX_CLUTTER_SHAPES, 2)) * size
    extent = rng.uniform(0.1, 0.7, (m, MAX_CLUTTER_SHAPES, 2)) * size
    end = rng.uniform(0.0, 1.0, (m, MAX_CLUTTER_SHAPES, 2)) * size
    widths = rng.integers(2, max(3, size // 8), (m, MAX_CLUTTER_SHAPES))
    colours = _random_colours(rng, (m, MAX_CLUTTER_SHAPES)).astype(int)
    images = []
    for i in range(m):
        img = Image.fromarray(fields[i])
        draw = ImageDraw.Draw(img)
        if horizon[i]:
            y0, y1 = horizon_y[i]
            draw.polygon([(0, y0), (size, y1), (size, size), (0, size)], fill=tuple(horizon_colour[i]))
        for k in range(n_shapes[i]):
            (x0, y0), (w, h), colour = start[i, k], extent[i, k], tuple(colours[i, k])
            if kinds[i, k] == 0:
                draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
            elif kinds[i, k] == 1:
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
            else:  # a pole or a branch
                draw.line([(x0, y0), tuple(end[i, k])], fill=colour, width=int(widths[i, k]))
        images.append(img)
    return images


def _homographies(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """PIL PERSPECTIVE coefficients (n, 8) mapping each output quad dst[i] onto the template quad src."""
    n = len(dst)
    a = np.zeros((n, 8, 8))
    b = np.zeros((n, 8))
    for k in range(4):
        x, y = dst[:, k, 0], dst[:, k, 1]
        u, v = src[k]
        a[:, 2 * k] = np.stack([x, y, np.ones(n), 0 * x, 0 * x, 0 * x, -u * x, -u * y], 1)
        a[:, 2 * k + 1] = np.stack([0 * x, 0 * x, 0 * x, x, y, np.ones(n), -v * x, -v * y], 1)
        b[:, 2 * k], b[:, 2 * k + 1] = u, v
    return np.linalg.solve(a, b[..., None])[..., 0]


def _geometry(n: int, work: int, rng: np.random.Generator) -> np.ndarray:
    """Random sign placements: PIL perspective coefficients (n, 8) for a template of size `work`."""
    lo, hi = SCALE_RANGE
    scale = lo + (hi - lo) * rng.random(n) ** SCALE_SKEW
    half = scale * work / 2
    slack = (work / 2 - half) * MAX_OFFSET + 0.05 * half  # how far the centre may move
    centre = work / 2 + rng.uniform(-1, 1, (n, 2)) * slack[:, None]
    theta = np.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, n))
    unit = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64)
    corners = unit[None] + rng.uniform(-PERSPECTIVE_JITTER, PERSPECTIVE_JITTER, (n, 4, 2))
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    rotated = np.stack([cos * corners[..., 0] - sin * corners[..., 1],
                        sin * corners[..., 0] + cos * corners[..., 1]], -1)
    dst = centre[:, None, :] + half[:, None, None] * rotated
    src = (unit + 1) / 2 * work
    return _homographies(dst, src)


def _photometric(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour cast, contrast, brightness (incl. dark images) and noise on a float batch in [0, 1]."""
    n = len(x)
    x = x * rng.uniform(1 - COLOUR_CAST, 1 + COLOUR_CAST, (n, 1, 1, 3)).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    contrast = rng.uniform(*CONTRAST_RANGE, (n, 1, 1, 1)).astype(np.float32)
    x = mean + (x - mean) * contrast
    lo, hi = np.log(BRIGHTNESS_RANGE)
    x = x * np.exp(rng.uniform(lo, hi, (n, 1, 1, 1))).astype(np.float32)
    sigma = rng.uniform(*NOISE_RANGE, (n, 1, 1, 1)).astype(np.float32)
    x = x + sigma * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x, 0.0, 1.0)


# =================================================================================================
# Public generator
# =================================================================================================
def make_signs(n: int, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8, n x image_size x image_size x 3) and their labels (int64 in 0..42),
    class-balanced (round-robin then shuffled), deterministic by seed."""
    n, image_size = int(n), int(image_size)
    if n < 0 or image_size < 8:
        raise ValueError(f"need n >= 0 and image_size >= 8, got n={n}, image_size={image_size}")
    # independent random streams, so each nuisance family is reproducible on its own
    label_rng, geom_rng, bg_rng, blur_rng, photo_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    labels = label_rng.permutation(np.arange(n, dtype=np.int64) % N_CLASSES)
    work = image_size * WORK_FACTOR
    coeffs = _geometry(n, work, geom_rng)
    lo, hi = BLUR_RANGE  # skewed towards little blur, as in GTSRB
    blur = lo + (hi - lo) * blur_rng.random(n) ** 2
    templates = [_template_image(c, work) for c in range(N_CLASSES)]

    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        backgrounds = _backgrounds(stop - start, work, bg_rng)
        batch = np.empty((stop - start, image_size, image_size, 3), dtype=np.uint8)
        for j, i in enumerate(range(start, stop)):
            img = backgrounds[j]
            sign = templates[labels[i]].transform((work, work), Image.PERSPECTIVE, tuple(coeffs[i]),
                                                  Image.BILINEAR)
            img.paste(sign, (0, 0), sign)  # the sign's alpha channel is the paste mask
            img = img.reduce(WORK_FACTOR)
            if blur[i] > MIN_BLUR:
                img = img.filter(ImageFilter.GaussianBlur(float(blur[i])))
            batch[j] = np.asarray(img)
        x = _photometric(batch.astype(np.float32) / 255.0, photo_rng)
        images[start:stop] = np.round(x * 255.0).astype(np.uint8)
    return images, labels
