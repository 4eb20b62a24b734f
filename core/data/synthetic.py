"""A deterministic synthetic set of small grayscale "lesion" images for demos and tests.

`benign` lesions are smooth, round-to-oval blobs with soft edges; `malignant` ones have
irregular, spiculated borders. Both sit on a textured background with noise, and their shape
parameters overlap on purpose, so a small CNN learns the task well but not perfectly. No
patient data is involved, so it can ship with the product and run offline. The noise, border and
pixel helpers here also make the harder `synthetic_tissue` set.
"""

from __future__ import annotations

import numpy as np

from core.data.dataset import DataKind, Dataset
from core.errors import ConfigError

CLASS_NAMES = ("benign", "malignant")
DEFAULT_SAMPLES = 1200
DEFAULT_SIZE = (28, 28)


def upsample_matrix(out_len: int, in_len: int) -> np.ndarray:
    """Linear-interpolation weights mapping `in_len` coarse points onto `out_len` pixels."""
    positions = np.linspace(0.0, in_len - 1.0, out_len)
    lower = np.floor(positions).astype(int).clip(0, in_len - 2)
    frac = positions - lower
    matrix = np.zeros((out_len, in_len))
    matrix[np.arange(out_len), lower] = 1.0 - frac
    matrix[np.arange(out_len), lower + 1] = frac
    return matrix


def smooth_noise(rng: np.random.Generator, n: int, height: int, width: int, coarse: int) -> np.ndarray:
    """`n` fields of standard-normal noise drawn on a `coarse` x `coarse` grid and interpolated
    to `height` x `width`: the larger `coarse`, the finer the texture."""
    grid = rng.standard_normal((n, coarse, coarse))
    return upsample_matrix(height, coarse) @ grid @ upsample_matrix(width, coarse).T


def lesion_border(
    theta: np.ndarray,
    radius: np.ndarray,
    *,
    ovality: np.ndarray,
    orientation: np.ndarray,
    lobulation: np.ndarray,
    lobes: np.ndarray,
    lobe_phase: np.ndarray,
    spike_amp: np.ndarray,
    spikes: np.ndarray,
    spike_phase: np.ndarray,
) -> np.ndarray:
    """The border's distance from the centre at each pixel's angle `theta` (n, h, w): an oval of
    mean `radius` with `lobes` smooth lobes and `spikes` spicules; the other arguments are (n,)."""

    def per_image(a: np.ndarray) -> np.ndarray:
        return a[:, None, None]

    return per_image(radius) * (
        1.0
        + per_image(ovality) * np.cos(2 * (theta - per_image(orientation)))
        + per_image(lobulation) * np.cos(per_image(lobes) * theta + per_image(lobe_phase))
        + per_image(spike_amp)
        * np.clip(np.cos(per_image(spikes) * (theta - per_image(spike_phase))), 0.0, None) ** 2
    )


def check_arguments(what: str, num_samples: int, image_size: tuple[int, int], channels: int,
                    *, min_samples: int) -> None:
    """Refuses sizes a synthetic set cannot generate; `what` names the set in the message."""
    if num_samples < min_samples:
        raise ConfigError(f"{what} needs at least {min_samples} samples, got {num_samples}.")
    if num_samples > 100_000:
        raise ConfigError(f"{what} is limited to 100000 samples, got {num_samples}.")
    height, width = image_size
    if min(height, width) < 16 or max(height, width) > 256:
        raise ConfigError(f"Synthetic images must be between 16 and 256 pixels a side, got {height}x{width}.")
    if channels not in (1, 3):
        raise ConfigError(f"Channels must be 1 or 3, got {channels}.")


def to_pixels(images: np.ndarray, channels: int) -> np.ndarray:
    """(n, h, w) intensities as the float32 (n, h, w, channels) a Dataset holds, stored at 8-bit
    levels as a scanner would store them."""
    levels = np.round(np.clip(images, 0.0, 1.0) * 255.0) / 255.0
    x = levels.astype(np.float32)[..., None]
    return np.repeat(x, 3, axis=3) if channels == 3 else x


def synthetic_images(
    num_samples: int = DEFAULT_SAMPLES,
    *,
    image_size: tuple[int, int] = DEFAULT_SIZE,
    channels: int = 1,
    seed: int = 0,
) -> Dataset:
    """`num_samples` images (half per class) of `image_size`; the same arguments give identical bytes."""
    check_arguments("The synthetic image set", num_samples, image_size, channels, min_samples=4)
    height, width = image_size

    rng = np.random.Generator(np.random.PCG64(seed))
    n = num_samples
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)
    malignant = y == 1
    scale = min(height, width)

    # Lesion geometry: centre near the middle, radius a fifth to a third of the image.
    cy = height / 2 + rng.normal(0.0, 0.07, n).clip(-0.15, 0.15) * scale
    cx = width / 2 + rng.normal(0.0, 0.07, n).clip(-0.15, 0.15) * scale
    # Malignant lesions tend to be larger; the ranges overlap.
    r0 = np.where(malignant, rng.uniform(0.2, 0.3, n), rng.uniform(0.15, 0.26, n)) * scale
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    dy = rows[None] - cy[:, None, None]
    dx = cols[None] - cx[:, None, None]
    dist = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)

    # Border: every lesion is somewhat oval and lobulated; malignant ones add spicules.
    ovality = rng.uniform(0.0, 0.25, n)
    phase2 = rng.uniform(0, 2 * np.pi, n)
    lobes = rng.integers(3, 5, n)
    lobulation = rng.uniform(0.0, 0.12, n)
    phase3 = rng.uniform(0, 2 * np.pi, n)
    spikes = rng.integers(3, 8, n)
    spike_phase = rng.uniform(0, 2 * np.pi, n)
    # Overlap by design: some malignant lesions are barely spiculated.
    spike_amp = np.where(malignant, rng.uniform(0.6, 1.5, n), 0.0)
    border = lesion_border(theta, r0, ovality=ovality, orientation=phase2, lobulation=lobulation, lobes=lobes,
                           lobe_phase=phase3, spike_amp=spike_amp, spikes=spikes, spike_phase=spike_phase)
    edge = np.where(malignant, rng.uniform(0.4, 1.0, n), rng.uniform(0.6, 1.4, n))
    mask = 1.0 / (1.0 + np.exp(-(border - dist) / edge[:, None, None]))

    background = rng.uniform(0.05, 0.25, n)[:, None, None] + 0.07 * smooth_noise(rng, n, height, width, 6)
    brightness = rng.uniform(0.4, 0.65, n)[:, None, None]
    # Malignant tissue is heterogeneous inside; benign tissue mostly uniform.
    heterogeneity = np.where(malignant, rng.uniform(0.15, 0.35, n), rng.uniform(0.0, 0.06, n))
    inner_texture = heterogeneity[:, None, None] * smooth_noise(
        rng, n, height, width, max(height, width) // 2
    )
    images = background + mask * (brightness + inner_texture)
    images += rng.normal(0.0, 0.04, images.shape)
    x = to_pixels(images, channels)
    return Dataset(
        name="synthetic_images",
        kind=DataKind.IMAGE,
        x=x,
        y=y,
        class_names=CLASS_NAMES,
        source=f"synthetic (seed {seed})",
        notes=(
            f"Synthetic lesions generated with seed {seed}: {n} images of {height}x{width}, "
            "benign = smooth round blobs, malignant = spiculated blobs. Not patient data.",
        ),
    )
