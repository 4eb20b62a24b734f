"""A harder deterministic synthetic image set: six breast-tissue findings as an ultrasound-like
scanner shows them. The small image CNN learns them well but not perfectly (5 hospitals, 5 rounds
of FedAvg: 0.84, where the two-class `synthetic_images` reaches 0.95), so what an attack costs shows.

Each class has its own cue (size, shape, border, echogenicity, inner texture, bright specks,
what happens below it), but the ranges of neighbouring classes overlap, and four simulated
scanners differ in gain, contrast curve, blur, speckle and noise. Lesions are rotated and
shifted at random; the beam comes from the top, so acoustic enhancement and shadowing fall below
a lesion. Not patient data: it ships with the product and is generated offline.
"""

from __future__ import annotations

import numpy as np

from core.data.dataset import DataKind, Dataset
from core.data.synthetic import check_arguments, lesion_border, smooth_noise, to_pixels

CLASS_NAMES = ("normal", "cyst", "fibroadenoma", "carcinoma", "calcification", "inflammation")
DEFAULT_SAMPLES = 1800
DEFAULT_SIZE = (32, 32)
REFERENCE_SIDE = 32.0  # lengths below in pixels are for a 32-pixel side and scale with the image
MAX_SPECKS = 8

# (low, high) of each lesion parameter per class, in CLASS_NAMES order; lengths are fractions of
# the image side, `edge` is in pixels. Neighbouring classes overlap on purpose. `normal` has no
# lesion: its shape is drawn but has no contrast. The contrasts are large because the small CNN
# learns faint ones too slowly for a few rounds of federated training.
_LESION = {
    # normal, cyst, fibroadenoma, carcinoma, calcification, inflammation
    "radius": ((0.10, 0.20), (0.10, 0.20), (0.15, 0.27), (0.12, 0.24), (0.06, 0.14), (0.26, 0.40)),
    "ovality": ((0.0, 0.3), (0.0, 0.15), (0.20, 0.45), (0.0, 0.30), (0.0, 0.20), (0.0, 0.30)),
    "lobulation": ((0.0, 0.1), (0.0, 0.05), (0.04, 0.16), (0.0, 0.15), (0.0, 0.10), (0.05, 0.20)),
    "spicules": ((0.0, 0.0), (0.0, 0.0), (0.0, 0.10), (0.40, 1.40), (0.0, 0.0), (0.0, 0.0)),
    "edge": ((1.0, 1.0), (0.3, 0.8), (0.6, 1.5), (0.8, 2.0), (0.6, 1.5), (2.5, 5.0)),
    "contrast": ((0.0, 0.0), (-0.90, -0.50), (-0.40, -0.12), (-0.64, -0.24), (-0.12, 0.0), (0.16, 0.40)),
    "heterogeneity": ((0.0, 0.0), (0.0, 0.06), (0.04, 0.12), (0.08, 0.24), (0.0, 0.08), (0.10, 0.30)),
    "posterior": ((0.0, 0.0), (0.20, 0.50), (-0.06, 0.10), (-0.50, -0.16), (0.0, 0.0), (0.0, 0.0)),
    "fibres": ((0.05, 0.10), (0.01, 0.07), (0.01, 0.07), (0.01, 0.07), (0.01, 0.07), (0.01, 0.07)),
    "speck_spread": ((0.25, 0.30), (0.25, 0.30), (0.25, 0.30), (0.10, 0.18), (0.08, 0.14), (0.25, 0.30)),
}
# Bright specks (calcium) per image, fewest and most: a cluster marks `calcification`, but
# carcinomas often hold a few and any tissue may show a stray one.
_SPECKS = ((0, 1), (0, 0), (0, 1), (0, 3), (4, MAX_SPECKS), (0, 1))
# The scanners, one drawn per image: overall gain, contrast curve (gamma), blur sigma (pixels),
# multiplicative speckle and additive noise.
_SCANNERS = {
    "gain": (1.0, 0.8, 1.15, 0.9),
    "gamma": (1.0, 1.35, 0.8, 1.1),
    "blur": (0.5, 0.9, 1.2, 0.7),
    "speckle": (0.05, 0.10, 0.14, 0.07),
    "noise": (0.02, 0.035, 0.03, 0.05),
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Clipped so that exp neither overflows nor yields subnormal numbers (see `_gaussian`).
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def _gaussian(squared_distance: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """exp(-d^2 / 2 sigma^2), cut to 0 beyond 5 sigma: float32's tail there is subnormal, and
    arithmetic on subnormal numbers is many times slower (a blur took 20x as long)."""
    ratio = np.minimum(squared_distance / (2.0 * sigma**2), 12.5)
    return np.where(ratio < 12.5, np.exp(-ratio), 0.0)


def _blur_matrices(sigma: np.ndarray, length: int) -> np.ndarray:
    """(n, length, length) row-normalised Gaussian kernels: `k @ image` blurs each image's columns."""
    offsets = (np.arange(length)[:, None] - np.arange(length)[None, :]).astype(sigma.dtype)
    kernels = _gaussian(offsets[None] ** 2, sigma[:, None, None])
    return kernels / kernels.sum(axis=2, keepdims=True)


def synthetic_tissue(
    num_samples: int = DEFAULT_SAMPLES,
    *,
    image_size: tuple[int, int] = DEFAULT_SIZE,
    channels: int = 1,
    seed: int = 0,
) -> Dataset:
    """`num_samples` images (classes balanced to within one) of `image_size`; the same arguments
    give identical bytes."""
    k = len(CLASS_NAMES)
    check_arguments("The synthetic tissue set", num_samples, image_size, channels, min_samples=k)
    height, width = image_size
    rng = np.random.Generator(np.random.PCG64(seed))
    n = num_samples
    y = rng.permutation(np.arange(n) % k).astype(np.int64)
    scale = min(height, width)
    px = scale / REFERENCE_SIDE

    # Image-sized arrays are float32: numpy's float32 sin, cos and exp are many times faster than
    # its float64 ones, and the result is stored at 8 bits anyway.
    def uniform(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, n).astype(np.float32)

    def integers(low: int, high: int) -> np.ndarray:
        return rng.integers(low, high, n).astype(np.float32)

    def draw(name: str) -> np.ndarray:
        ranges = np.asarray(_LESION[name])[y]
        return rng.uniform(ranges[:, 0], ranges[:, 1]).astype(np.float32)

    def texture(coarse: int) -> np.ndarray:
        return smooth_noise(rng, n, height, width, coarse).astype(np.float32)

    def per_image(a: np.ndarray) -> np.ndarray:
        return a[:, None, None]

    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)

    # Lesion: centre jittered about the middle, oval, lobed or spiculated, rotated at random.
    cy = height / 2 + uniform(-0.12, 0.12) * scale
    cx = width / 2 + uniform(-0.12, 0.12) * scale
    radius = draw("radius") * scale
    dy = rows[None] - per_image(cy)
    dx = cols[None] - per_image(cx)
    dist = np.sqrt(dy * dy + dx * dx)
    border = lesion_border(
        np.arctan2(dy, dx),
        radius,
        ovality=draw("ovality"),
        orientation=uniform(0, np.pi),
        lobulation=draw("lobulation"),
        lobes=integers(2, 5),
        lobe_phase=uniform(0, 2 * np.pi),
        spike_amp=draw("spicules"),
        spikes=integers(4, 9),
        spike_phase=uniform(0, 2 * np.pi),
    )
    edge = draw("edge") * px
    mask = _sigmoid((border - dist) / per_image(edge))
    interior = per_image(draw("contrast")) + per_image(draw("heterogeneity")) * texture(max(4, scale // 3))

    # Below the lesion, in its column of the beam: brighter behind fluid, shadowed behind dense
    # tissue, fading with depth.
    r = per_image(radius)
    column = _sigmoid((dy - r) / (1.5 * px)) * _sigmoid((r - np.abs(dx)) / (1.5 * px))
    posterior = per_image(draw("posterior")) * column * np.exp(-np.clip(dy, 0.0, None) / (3.0 * r + 1.0))

    # Parenchyma: a smooth level with fibrous streaks of random direction, warped to look grown.
    direction = uniform(0, np.pi)
    period = uniform(3.5, 6.0) * px
    along = rows[None] * per_image(np.sin(direction)) + cols[None] * per_image(np.cos(direction))
    fibres = per_image(draw("fibres")) * np.sin(2 * np.pi * along / per_image(period) + 2.0 * texture(4))
    tissue = per_image(uniform(0.35, 0.55)) + 0.05 * texture(5) + fibres

    # Calcium: small bright specks spread about the lesion's centre. A Gaussian speck is the
    # product of a row and a column profile, so all of them are one batched matrix product.
    span = np.asarray(_SPECKS)[y]
    count = rng.integers(span[:, 0], span[:, 1] + 1)
    spread = draw("speck_spread")[:, None] * scale
    sy = cy[:, None] + rng.normal(0.0, 1.0, (n, MAX_SPECKS)).astype(np.float32) * spread
    sx = cx[:, None] + rng.normal(0.0, 1.0, (n, MAX_SPECKS)).astype(np.float32) * spread
    shown = np.arange(MAX_SPECKS)[None] < count[:, None]
    amplitude = np.where(shown, rng.uniform(0.8, 1.4, (n, MAX_SPECKS)), 0.0).astype(np.float32)
    size = rng.uniform(0.7, 1.1, (n, MAX_SPECKS)).astype(np.float32)[..., None] * px
    row_profile = _gaussian((rows[:, 0] - sy[..., None]) ** 2, size)  # (n, specks, h)
    col_profile = _gaussian((cols[0] - sx[..., None]) ** 2, size)  # (n, specks, w)
    specks = (row_profile * amplitude[..., None]).transpose(0, 2, 1) @ col_profile

    echo = tissue + mask * interior + posterior + specks

    # The scanner: speckle, its point-spread blur, gain and contrast curve, then electronic noise.
    scanner = rng.integers(0, len(_SCANNERS["gain"]), n)

    def profile(name: str) -> np.ndarray:
        return np.asarray(_SCANNERS[name], dtype=np.float32)[scanner]

    echo = echo * (1.0 + per_image(profile("speckle")) * rng.standard_normal(echo.shape, dtype=np.float32))
    sigma = profile("blur") * px
    echo = _blur_matrices(sigma, height) @ echo @ _blur_matrices(sigma, width).transpose(0, 2, 1)
    gain = per_image(profile("gain") * uniform(0.9, 1.1))
    offset = per_image(uniform(-0.05, 0.05))
    images = offset + gain * np.clip(echo, 0.0, None) ** per_image(profile("gamma"))
    images += per_image(profile("noise")) * rng.standard_normal(images.shape, dtype=np.float32)
    return Dataset(
        name="synthetic_tissue",
        kind=DataKind.IMAGE,
        x=to_pixels(images, channels),
        y=y,
        class_names=CLASS_NAMES,
        source=f"synthetic (seed {seed})",
        notes=(
            (
                f"Synthetic ultrasound-like breast tissue generated with seed {seed}: {n} images of "
                f"{height}x{width}, {k} classes ({', '.join(CLASS_NAMES)}) from 4 simulated scanners. "
                "Not patient data."
            ),
        ),
    )
