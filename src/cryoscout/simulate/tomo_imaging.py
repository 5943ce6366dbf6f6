"""Image a phantom as a microscope would: tilt series, CTF, noise, weighted back-projection.

Geometry: the tilt axis is the y axis (array axis 1); a projection at tilt angle θ
integrates the volume along the beam after rotating it about y by θ, so each
projection is a ``(y, x)`` image. Projection and back-projection share one sparse
linear-interpolation operator (torch), which makes them exact adjoints and fast on CPU.

Contrast: images record ``-CTF * projected density`` (protein darker than the ice for
underfocus, as in real micrographs); with ``phase_flip`` the recorded images are
phase-flipped (IMOD ``ctfphaseflip`` style: every Fourier coefficient is given the sign
of the CTF's first lobe), so the tomogram keeps protein dark.
"""

from __future__ import annotations

import numpy as np


def electron_wavelength_A(kv: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    v = kv * 1e3
    return 12.2643 / np.sqrt(v * (1 + 0.978466e-6 * v))


def ctf_2d(
    shape: tuple[int, int],
    pixel_size_A: float,
    defocus_um: float,
    kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
) -> np.ndarray:
    """The CTF on the ``rfft2`` grid of a ``(y, x)`` image.

    ``CTF = -(sqrt(1 - A^2) sin(chi) + A cos(chi))`` with
    ``chi = pi lambda df k^2 - pi/2 Cs lambda^3 k^4``; ``defocus_um > 0`` is underfocus,
    which makes the low-frequency CTF negative (protein dark).

    Returns
    -------
    numpy.ndarray
        ``(y, x // 2 + 1)`` float64.
    """
    lam = electron_wavelength_A(kv)
    ky = np.fft.fftfreq(shape[0], d=pixel_size_A)
    kx = np.fft.rfftfreq(shape[1], d=pixel_size_A)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    df = defocus_um * 1e4
    cs = cs_mm * 1e7
    chi = np.pi * lam * df * k2 - 0.5 * np.pi * cs * lam**3 * k2**2
    a = amplitude_contrast
    return -(np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi))


def projection_operator(zx_shape: tuple[int, int], angles_deg: np.ndarray):
    """Sparse matrix mapping ``(z, x)`` planes to ``(tilt, x')`` detector lines.

    A voxel at ``(z, x)`` lands at ``x' = (x - cx) cos t - (z - cz) sin t + cx`` and is
    split linearly between the two nearest detector pixels.

    Returns
    -------
    torch.Tensor
        Sparse CSR ``(n_tilts * nx, nz * nx)``.
    """
    import torch

    nz, nx = zx_shape
    cz, cx = (nz - 1) / 2, (nx - 1) / 2
    z, x = np.meshgrid(np.arange(nz), np.arange(nx), indexing="ij")
    cols_all, rows_all, vals_all = [], [], []
    col = (z * nx + x).ravel()
    for t, ang in enumerate(np.radians(angles_deg)):
        xp = ((x - cx) * np.cos(ang) - (z - cz) * np.sin(ang) + cx).ravel()
        i0 = np.floor(xp).astype(np.int64)
        w = xp - i0
        for idx, wt in ((i0, 1 - w), (i0 + 1, w)):
            ok = (idx >= 0) & (idx < nx) & (wt > 0)
            rows_all.append(t * nx + idx[ok])
            cols_all.append(col[ok])
            vals_all.append(wt[ok])
    rows = torch.from_numpy(np.concatenate(rows_all))
    cols = torch.from_numpy(np.concatenate(cols_all))
    vals = torch.from_numpy(np.concatenate(vals_all).astype(np.float32))
    a = torch.sparse_coo_tensor(
        torch.stack([rows, cols]),
        vals,
        (len(angles_deg) * nx, nz * nx),
        check_invariants=False,
    ).coalesce()
    return a


def project(volume: np.ndarray, angles_deg: np.ndarray, operator=None) -> np.ndarray:
    """Tilt series of a ``(z, y, x)`` volume: ``(n_tilts, y, x)`` line integrals."""
    import torch

    nz, ny, nx = volume.shape
    a = operator if operator is not None else projection_operator((nz, nx), angles_deg)
    v = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    cols = v.permute(0, 2, 1).reshape(nz * nx, ny)  # (z*x, y)
    p = torch.sparse.mm(a, cols)  # (t*x', y)
    return p.reshape(len(angles_deg), nx, ny).permute(0, 2, 1).contiguous().numpy()


def ramp_filter(images: np.ndarray) -> np.ndarray:
    """Ram-Lak filter along x of ``(n, y, x)`` images (zero-padded, no DC bias)."""
    nx = images.shape[-1]
    n = 1 << int(np.ceil(np.log2(2 * nx)))
    k = np.arange(n)
    k = np.where(k > n // 2, k - n, k)
    # Spatial-domain Ram-Lak kernel: its FFT is a ramp whose DC term is right for a
    # finite detector (Kak & Slaney), unlike a sampled |k| that zeroes the mean.
    h = np.zeros(n)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    filt = np.real(np.fft.rfft(h))
    f = np.fft.rfft(images, n=n, axis=-1) * filt
    return np.fft.irfft(f, n=n, axis=-1)[..., :nx].astype(np.float32)


def backproject(images: np.ndarray, nz: int, operator) -> np.ndarray:
    """Adjoint of :func:`project`: ``(n_tilts, y, x)`` images -> ``(z, y, x)`` volume."""
    import torch

    t, ny, nx = images.shape
    p = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    rows = p.permute(0, 2, 1).reshape(t * nx, ny)
    v = torch.sparse.mm(operator.t().coalesce(), rows)  # (z*x, y)
    return v.reshape(nz, nx, ny).permute(0, 2, 1).contiguous().numpy()


def image_tilt_series(
    density: np.ndarray,
    angles_deg: np.ndarray,
    voxel_size_A: float,
    rng: np.random.Generator,
    snr: float | None = 0.1,
    ctf: bool = True,
    defocus_um: float = 3.0,
    phase_flip: bool = True,
) -> tuple[np.ndarray, np.ndarray, object]:
    """Project, apply the CTF, add noise and (optionally) phase-flip.

    Parameters
    ----------
    density
        ``(z, y, x)`` mass density (protein positive).
    angles_deg
        Tilt angles.
    voxel_size_A
        Pixel size of the images.
    rng
        Random generator for the noise.
    snr
        Signal-to-noise ratio of the images: variance of the noise-free images over
        the noise variance; ``None`` for no noise.
    ctf
        Apply a CTF (300 kV, Cs 2.7 mm, amplitude contrast 0.07, no defocus gradient).
    defocus_um
        Underfocus in µm.
    phase_flip
        Phase-flip the recorded images before reconstruction.

    Returns
    -------
    images : numpy.ndarray
        ``(n_tilts, y, x)`` recorded (and phase-flipped) images, protein dark.
    clean : numpy.ndarray
        The same without noise.
    operator
        The projection operator (reuse it for the back-projection).
    """
    nz, ny, nx = density.shape
    op = projection_operator((nz, nx), angles_deg)
    proj = project(density, angles_deg, op)
    proj -= proj.mean(axis=(1, 2), keepdims=True)
    if ctf:
        c = ctf_2d((ny, nx), voxel_size_A, defocus_um)
        clean = np.fft.irfft2(np.fft.rfft2(proj) * c, s=(ny, nx)).astype(np.float32)
    else:
        c = None
        clean = -proj
    images = clean.copy()
    if snr is not None and snr > 0:
        sigma = np.sqrt(clean.var() / snr)
        images += rng.normal(0.0, sigma, size=images.shape).astype(np.float32)
    if ctf and phase_flip:
        flip = -np.sign(c)
        images = np.fft.irfft2(np.fft.rfft2(images) * flip, s=(ny, nx)).astype(np.float32)
        clean = np.fft.irfft2(np.fft.rfft2(clean) * flip, s=(ny, nx)).astype(np.float32)
    return images, clean, op


def weighted_backprojection(images: np.ndarray, nz: int, operator) -> np.ndarray:
    """Weighted back-projection (ramp filter, then back-projection) to a ``(z, y, x)`` volume."""
    filtered = ramp_filter(images)
    vol = backproject(filtered, nz, operator)
    return (vol * (np.pi / max(1, images.shape[0]))).astype(np.float32)
