"""Warping: resample a feature volume (or image) along a dense flow field.

INFP Sec. 3.1: the flow predicted by `F` warps the appearance feature volume before decoding. Flow is
a backward map in grid_sample units: output pixel p reads input at p + flow(p), both in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange

from infp.models.blocks import coords, pixel_centres


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (B, 2, h, w) flow; values are in normalised units, so they need no scaling."""
    if flow.shape[-2:] == size:
        return flow
    return F.interpolate(flow, size=size, mode="bilinear", align_corners=False)


def warp(x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """x: (B, C, H, W), flow: (B, 2, h, w) -> (B, C, H, W); the flow is resized to x first.

    `mode` "bicubic" for images shown to the viewer: a bilinear read at a fractional position is a
    [1 - t, t] blur, and over a face's random sub-pixel offsets it keeps about 0.7 of the Laplacian
    variance of a real frame (measured on held-out 512-px video: 0.70 bilinear, 0.92 bicubic, 0.97
    Lanczos); features can stay bilinear."""
    b, _, h, w = x.shape
    flow = resize_flow(flow, (h, w))
    grid = (coords(b, h, w, flow) + flow).permute(0, 2, 3, 1)  # (B, H, W, 2)
    return sample(x, grid, mode)


def affine_fit(k_from: torch.Tensor, k_to: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """Least-squares affine map between keypoint sets (B, K, 2) -> M (B, 3, 2), [x, y, 1] @ M ~ k_to.
    A small ridge toward the identity keeps it defined for degenerate (collinear) sets."""
    x = torch.cat([k_from, torch.ones_like(k_from[..., :1])], -1).float()  # (B, K, 3)
    eye = torch.eye(3, 2, device=x.device)
    a = x.transpose(1, 2) @ x + ridge * torch.eye(3, device=x.device)  # (B, 3, 3)
    return torch.linalg.solve(a, x.transpose(1, 2) @ k_to.float() + ridge * eye)


def apply_affine(points: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) points through (B, 3, 2) affine maps."""
    return points @ m[:, :2].to(points.dtype) + m[:, 2:].to(points.dtype)


def head_flow(k_src: torch.Tensor, k_drv: torch.Tensor, size: int, head: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The keypoints' common motion: the affine map from driving to source keypoints, applied to every
    pixel with a weight that falls off as a Gaussian around the keypoints' centre (its width `head`
    times their RMS distance from it), so hair and ears move with the face while the background stays.
    -> the flow (B, 2, size, size) and the affine map (B, 3, 2)."""
    m = affine_fit(k_drv, k_src)
    b = k_drv.shape[0]
    p = coords(b, size, size, k_drv).flatten(2).transpose(1, 2)  # (B, N, 2) pixel centres
    centre = k_drv.mean(1, keepdim=True)  # (B, 1, 2)
    radius = ((k_drv - centre) ** 2).sum(-1).mean(-1).sqrt()[:, None, None] * head  # (B, 1, 1)
    weight = torch.exp(-((p - centre) ** 2).sum(-1, keepdim=True) / (2 * radius**2))  # (B, N, 1)
    flow = (apply_affine(p, m) - p) * weight
    return flow.transpose(1, 2).reshape(b, 2, size, size), m


LIP_SIDE_SOFTNESS = 0.01  # [-1, 1] units (1.3 px at 256): how sharply a lip's reach stops at the midline


def _column_curve(arc: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """A curve through points (B, P, 2), as its y at each column `axis` (size,) -> (B, size): linear
    between the points, held flat beyond the ends."""
    x, order = arc[..., 0].sort(-1)
    y = arc[..., 1].gather(-1, order)
    i = torch.searchsorted(x.contiguous(), axis.expand(len(x), -1).contiguous()).clamp(1, x.shape[1] - 1)
    x0, x1, y0, y1 = x.gather(-1, i - 1), x.gather(-1, i), y.gather(-1, i - 1), y.gather(-1, i)
    return y0 + ((axis - x0) / (x1 - x0).clamp_min(1e-6)).clamp(0, 1) * (y1 - y0)


def keypoint_flow(k_src: torch.Tensor, k_drv: torch.Tensor, size: int, sigma: float, background: float = 0.02,
                  head: float = 0.0, sides: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense backward flow from keypoint pairs: a pixel near driving keypoint i reads the source near
    source keypoint i. k_src, k_drv: (B, K, 2) in [-1, 1] -> flow (B, 2, size, size) and the
    driving-minus-source keypoint density (B, 1, size, size), where features appear and vanish.

    Each keypoint's displacement is spread by a Gaussian of width `sigma` around its driving position
    and normalised (Nadaraya-Watson); `background` is the weight of a still, zero-displacement
    neighbour everywhere, so pixels far from every keypoint (hair, shoulders, background) stay put.
    With `head` > 0 the common (affine) motion of the keypoints is spread over the whole head first
    (`head_flow`), and the Gaussians spread only what it leaves: a head that turns or shifts then
    carries its hair and outline along instead of stretching at the face's edge.

    `sides`: pairs of arcs that meet when an opening closes, each the positions of its upper and
    its lower edge, corner to corner (both corners in each): the inner lips, the eyelids. Their
    keypoints then spread only to their own side of the driving opening's midline. A mouth that
    closes brings the two lips onto one line, where a plain spread averages their opposite
    displacements, so the lip line reads the middle of the source's opening (its teeth) and the
    mouth stays open; split at the midline, the upper lip comes down to it from above and the lower
    lip up from below. An eye is the same opening, smaller: a blink's upper lid comes down.
    """
    # The Gaussian is separable, exp(-(dx² + dy²) / 2s²) = gx * gy, so every sum over keypoints is a
    # (size x K) @ (K x size) product: no (B, HW, K) tensor (11 ms a frame on 2 cores; this, under 1 ms).
    axis = pixel_centres(size, k_src)

    def profiles(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.exp(-(k[..., None] - axis) ** 2 / (2 * sigma**2))  # (B, K, 2, size)
        return g[:, :, 0], g[:, :, 1]  # along x, along y: (B, K, size) each

    def spread(gx: torch.Tensor, gy: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is not None:
            gy = gy * weight[..., None]  # (B, K, size)
        return torch.einsum("bky,bkx->byx", gy, gx)  # (B, size, size)

    gx, gy = profiles(k_drv)
    common = 0.0
    move = k_src - k_drv  # (B, K, 2)
    if head > 0:
        with torch.autocast(k_drv.device.type, enabled=False):  # a fit: in float32 even in a bf16 forward
            common, m = head_flow(k_src.float(), k_drv.float(), size, head)
            move = (k_src.float() - apply_affine(k_drv.float(), m)).to(k_drv.dtype)  # what the common motion leaves
        common = common.to(k_drv.dtype)

    def reach(w: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussians' summed weight (B, size, size) and weighted displacement (B, 2, size, size),
        over the keypoints weighted by w (B, K) (all when None)."""
        ones = torch.ones_like(move[..., 0]) if w is None else w
        return spread(gx, gy, w), torch.stack([spread(gx, gy, ones * move[..., c]) for c in range(2)], dim=1)

    full, moved = reach()
    total = full
    for upper, lower in sides:  # take back each edge's reach on the far side of its opening's midline
        mid = (_column_curve(k_drv[:, upper], axis) + _column_curve(k_drv[:, lower], axis)) / 2  # (B, size)
        above = torch.sigmoid((mid[:, None, :] - axis[:, None]) / LIP_SIDE_SOFTNESS)  # (B, y, x)
        for arc, side in ((upper, above), (lower, 1 - above)):
            w = torch.zeros_like(move[..., 0])
            w[:, arc[1:-1]] = 1  # the corners lie on the midline: they reach both sides
            t, m = reach(w)
            total, moved = total - (1 - side) * t, moved - (1 - side)[:, None] * m
    local = moved / (total[:, None] + background)
    change = full - spread(*profiles(k_src))
    return common + local, change[:, None]  # (B, 2, size, size), (B, 1, size, size)


def polygon_mask(poly: torch.Tensor, size: int | tuple[int, int], supersample: int = 4) -> torch.Tensor:
    """Area share of each pixel inside a closed polygon: poly (B, P, 2) in [-1, 1] (x, y) ->
    (B, 1, h, w) in [0, 1], `size` h = w or (h, w).

    Even-odd rule: a point is inside when a ray from it to the right crosses the outline an odd
    number of times. Sampled on a `supersample`-times finer grid and averaged, so a mouth opening
    that is a pixel or two wide at the feature resolution still shows as a partial mask.
    """
    h, w = (size, size) if isinstance(size, int) else size
    n_h, n_w = h * supersample, w * supersample
    rows = pixel_centres(n_h, poly)  # (n_h,) the fine grid's rows
    p0, p1 = poly, poly.roll(-1, dims=1)  # each edge's ends: (B, P, 2)
    y0, y1 = p0[..., 1:], p1[..., 1:]  # (B, P, 1) against the rows (n_h,)
    spans = (y0 <= rows) != (y1 <= rows)  # (B, P, n_h): the edge crosses this row
    t = (rows - y0) / torch.where(y1 == y0, torch.ones_like(y0), y1 - y0)
    x = p0[..., :1] + t * (p1[..., :1] - p0[..., :1])  # (B, P, n_h): where it crosses
    # Column j lies left of a crossing at x when j < left, the number of pixel centres below x. So
    # count the crossings per value of `left` (bin 0 also takes the edges that miss the row, as they
    # lie left of no column) and sum the counts from j + 1 up: (B, n, n) work, not (B, P, n, n).
    left = torch.ceil(((x + 1) * n_w - 1) / 2).clamp(0, n_w).long() * spans  # (B, P, n_h)
    bins = torch.zeros(poly.shape[0], n_h, n_w + 1, device=poly.device)
    bins.scatter_add_(2, left.transpose(1, 2), torch.ones_like(left.transpose(1, 2), dtype=bins.dtype))
    hits = bins.flip(2).cumsum(2).flip(2)[..., 1:]  # (B, n_h rows, n_w cols): crossings right of each pixel
    inside = (hits % 2).to(poly.dtype)[:, None]
    return F.avg_pool2d(inside, supersample) if supersample > 1 else inside


class Window(NamedTuple):
    """A rectangle of the crop, per batch element: where the decoder works (models/decoder.py)."""

    top: torch.Tensor  # (B,) long: first row, in pixels at the working size
    left: torch.Tensor  # (B,) long: first column
    height: int  # pixels at the working size, the same for the whole batch
    width: int
    size: int  # the crop side it lies in

    @classmethod
    def whole(cls, batch: int, size: int, device: torch.device | None = None) -> Window:
        zero = torch.zeros(batch, dtype=torch.long, device=device)
        return cls(zero, zero, size, size, size)

    def coords(self, scale: int, like: torch.Tensor) -> torch.Tensor:
        """(B, h, w, 2) grid_sample coordinates (x, y) of the window's pixel centres at 1/scale of the
        working size (the offsets are multiples of `scale`)."""
        n = self.size // scale
        ys = (2 * (self.top[:, None] // scale + torch.arange(self.height // scale, device=like.device)) + 1) / n - 1
        xs = (2 * (self.left[:, None] // scale + torch.arange(self.width // scale, device=like.device)) + 1) / n - 1
        b, h, w = len(ys), ys.shape[1], xs.shape[1]
        return torch.stack([xs[:, None, :].expand(b, h, w), ys[:, :, None].expand(b, h, w)], -1).to(like.dtype)

    def to_window(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) points in the crop's [-1, 1] -> in the window's own [-1, 1] (x, y)."""
        px = (points + 1) * (self.size / 2)  # pixels
        origin = torch.stack([self.left, self.top], -1)[:, None].to(points.dtype)
        extent = torch.tensor([self.width, self.height], dtype=points.dtype, device=points.device)
        return (px - origin) / extent * 2 - 1

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S', S') at any multiple of the working size's 1/scale -> the window's part of it."""
        scale = self.size // x.shape[-1]
        h, w = self.height // scale, self.width // scale
        return torch.stack([x[i, :, t // scale : t // scale + h, l // scale : l // scale + w]
                            for i, (t, l) in enumerate(zip(self.top.tolist(), self.left.tolist()))])

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) window content -> (B, C, S, S), zero outside the window."""
        # written into one zeroed tensor: padding each image (F.pad, then stack) took 45 ms a batch of 8 on
        # 2 CPU threads, this 0.6 ms
        out = x.new_zeros((len(x), x.shape[1], self.size, self.size))
        for i, (t, l) in enumerate(zip(self.top.tolist(), self.left.tolist())):
            out[i, :, t : t + self.height, l : l + self.width] = x[i]
        return out


def sample(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """x (B, C, H, W) read at grid (B, h, w, 2) in [-1, 1] -> (B, C, h, w); edges repeat."""
    b, h, w, _ = grid.shape
    if b > 1 and x.stride(0) == 0:
        # one image viewed as a batch (a portrait's features rendering B frames): read that one image at
        # the B grids stacked, rather than let grid_sample (or autocast's cast before it) copy it B times
        # (8% of a frame's rendering on CPU, measured); the same samples
        out = F.grid_sample(x[:1], grid.reshape(1, b * h, w, 2), mode=mode, padding_mode="border", align_corners=False)
        return rearrange(out, "1 c (b h) w -> b c h w", b=b)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def warp_window(x: torch.Tensor, flow: torch.Tensor, window: Window, mode: str = "bilinear") -> torch.Tensor:
    """`warp(x, flow)` cut to `window`, computing only the window: x (B, C, H, W) at 1/scale of the
    working size, flow (B, 2, h, w) -> (B, C, window height / scale, window width / scale). Reading
    the flow at the window's pixel centres is exactly its bilinear resize to x's size there."""
    grid = window.coords(window.size // x.shape[-1], x)
    return sample(x, grid + sample(flow, grid).permute(0, 2, 3, 1), mode)
