"""Image a phantom as a microscope would: tilt series, CTF, noise, weighted back-projection.

Geometry: the tilt axis is the y axis (array axis 1); a projection at tilt angle θ
integrates the volume along the beam after rotating it about y by θ, so each
projection is a ``(y, x)`` image. Projection and back-projection share one sparse
linear-interpolation operator (torch), which makes them exact adjoints and fast on CPU.

Contrast: images record ``-CTF * projected density`` (protein darker than the ice for
underfocus, as in real micrographs); with ``phase_flip`` the recorded images are
phase-flipped (IMOD ``ctfphaseflip`` style: every Fourier coefficient is given the sign
of the CTF's first lobe), so the tomogram keeps protein dark.

What makes one microscope's tomograms differ from another's, each off by default:
astigmatism (the defocus depends on the direction in the image); a defocus gradient
(each voxel is imaged at the defocus of its own height along the beam, so across the
tilt axis at high tilt and through the depth of the slab; the phase flip assumes the
nominal defocus everywhere, as a whole-image correction does); noise whose power falls or
rises with frequency; residual alignment errors (each recorded image shifted and rotated a
little while the reconstruction assumes the ideal geometry); a specimen wider than the
field of view (the detector is narrower than the volume, so material outside the
reconstructed region enters the images at high tilt).
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
    astigmatism_um: float = 0.0,
    astigmatism_angle_deg: float = 0.0,
) -> np.ndarray:
    """The CTF on the ``rfft2`` grid of a ``(y, x)`` image.

    ``CTF = -(sqrt(1 - A^2) sin(chi) + A cos(chi))`` with
    ``chi = pi lambda df k^2 - pi/2 Cs lambda^3 k^4``; ``defocus_um > 0`` is underfocus,
    which makes the low-frequency CTF negative (protein dark). With astigmatism the
    defocus depends on the direction ``phi`` of the frequency (CTFFIND convention):
    ``df(phi) = defocus + astigmatism / 2 * cos(2 (phi - angle))``, so the Thon rings
    are ellipses, drawn in closest along ``angle`` (largest defocus) and furthest out at
    ``angle + 90°``.

    Parameters
    ----------
    shape
        ``(y, x)`` image shape.
    pixel_size_A
        Pixel size in Å.
    defocus_um
        Mean underfocus in µm.
    kv, cs_mm, amplitude_contrast
        Voltage, spherical aberration and amplitude contrast.
    astigmatism_um
        Difference between the largest and the smallest defocus in µm.
    astigmatism_angle_deg
        Direction of the largest defocus, counter-clockwise from x, in degrees.

    Returns
    -------
    numpy.ndarray
        ``(y, x // 2 + 1)`` float64.
    """
    lam = electron_wavelength_A(kv)
    ky = np.fft.fftfreq(shape[0], d=pixel_size_A)[:, None]
    kx = np.fft.rfftfreq(shape[1], d=pixel_size_A)[None, :]
    k2 = ky**2 + kx**2
    df = defocus_um * 1e4
    if astigmatism_um:
        phi = np.arctan2(ky, kx)
        df = df + 0.5 * astigmatism_um * 1e4 * np.cos(2 * (phi - np.radians(astigmatism_angle_deg)))
    cs = cs_mm * 1e7
    chi = np.pi * lam * df * k2 - 0.5 * np.pi * cs * lam**3 * k2**2
    a = amplitude_contrast
    return -(np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi))


def _projection_entries(
    zx_shape: tuple[int, int], angles_deg: np.ndarray, detector_nx: int | None = None
):
    """Nonzeros of the projection matrix and the height of each along the beam.

    Returns ``rows, cols, vals, heights`` (heights in voxels, relative to the centre).
    """
    nz, nx = zx_shape
    nd = nx if detector_nx is None else int(detector_nx)
    cz, cx, cd = (nz - 1) / 2, (nx - 1) / 2, (nd - 1) / 2
    z, x = np.meshgrid(np.arange(nz), np.arange(nx), indexing="ij")
    cols_all, rows_all, vals_all, h_all = [], [], [], []
    col = (z * nx + x).ravel()
    for t, ang in enumerate(np.radians(angles_deg)):
        xp = ((x - cx) * np.cos(ang) - (z - cz) * np.sin(ang) + cd).ravel()
        h = ((x - cx) * np.sin(ang) + (z - cz) * np.cos(ang)).ravel()
        i0 = np.floor(xp).astype(np.int64)
        w = xp - i0
        for idx, wt in ((i0, 1 - w), (i0 + 1, w)):
            ok = (idx >= 0) & (idx < nd) & (wt > 0)
            rows_all.append(t * nd + idx[ok])
            cols_all.append(col[ok])
            vals_all.append(wt[ok])
            h_all.append(h[ok])
    return (
        np.concatenate(rows_all),
        np.concatenate(cols_all),
        np.concatenate(vals_all).astype(np.float32),
        np.concatenate(h_all),
    )


def _sparse(rows, cols, vals, shape):
    import torch

    return torch.sparse_coo_tensor(
        torch.stack([torch.from_numpy(rows), torch.from_numpy(cols)]),
        torch.from_numpy(vals),
        shape,
        check_invariants=False,
    ).coalesce()


def projection_operator(
    zx_shape: tuple[int, int], angles_deg: np.ndarray, detector_nx: int | None = None
):
    """Sparse matrix mapping ``(z, x)`` planes to ``(tilt, x')`` detector lines.

    A voxel at ``(z, x)`` lands at ``x' = (x - cx) cos t - (z - cz) sin t + cd`` and is
    split linearly between the two nearest detector pixels.

    Parameters
    ----------
    zx_shape
        ``(nz, nx)`` of the volume.
    angles_deg
        Tilt angles.
    detector_nx
        Detector width in pixels (centred on the volume); default ``nx``. A volume wider
        than the detector puts material from outside the field of view into the images.

    Returns
    -------
    torch.Tensor
        Sparse ``(n_tilts * detector_nx, nz * nx)``.
    """
    nd = zx_shape[1] if detector_nx is None else int(detector_nx)
    rows, cols, vals, _ = _projection_entries(zx_shape, angles_deg, nd)
    return _sparse(rows, cols, vals, (len(angles_deg) * nd, zx_shape[0] * zx_shape[1]))


def height_sliced_operators(
    zx_shape: tuple[int, int],
    angles_deg: np.ndarray,
    step_vox: float,
    detector_nx: int | None = None,
) -> list[tuple[float, object]]:
    """The projection operator split by height along the beam, for a defocus gradient.

    At tilt ``t`` a voxel's height is ``h = (x - cx) sin t + (z - cz) cos t`` (voxels),
    so across the tilt axis at high tilt and with depth in the slab. The pieces sum to
    :func:`projection_operator`.

    Returns
    -------
    list of (float, torch.Tensor)
        ``(centre height in voxels, operator of the voxels within step_vox / 2 of it)``.
    """
    nd = zx_shape[1] if detector_nx is None else int(detector_nx)
    rows, cols, vals, h = _projection_entries(zx_shape, angles_deg, nd)
    b = np.round(h / step_vox).astype(np.int64)
    shape = (len(angles_deg) * nd, zx_shape[0] * zx_shape[1])
    return [
        (float(k * step_vox), _sparse(rows[b == k], cols[b == k], vals[b == k], shape))
        for k in np.unique(b)
    ]


def project(volume: np.ndarray, angles_deg: np.ndarray, operator=None) -> np.ndarray:
    """Tilt series of a ``(z, y, x)`` volume: ``(n_tilts, y, x)`` line integrals."""
    import torch

    nz, ny, nx = volume.shape
    a = operator if operator is not None else projection_operator((nz, nx), angles_deg)
    v = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    cols = v.permute(0, 2, 1).reshape(nz * nx, ny)  # (z*x, y)
    p = torch.sparse.mm(a, cols)  # (t*x', y)
    nd = a.shape[0] // len(angles_deg)
    return p.reshape(len(angles_deg), nd, ny).permute(0, 2, 1).contiguous().numpy()


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

    t, ny, nd = images.shape
    nx = operator.shape[1] // nz
    p = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    rows = p.permute(0, 2, 1).reshape(t * nd, ny)
    v = torch.sparse.mm(operator.t().coalesce(), rows)  # (z*x, y)
    return v.reshape(nz, nx, ny).permute(0, 2, 1).contiguous().numpy()


def coloured_noise(shape: tuple[int, ...], slope: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise whose power spectrum goes as ``k^slope``.

    ``k`` is the spatial frequency over all axes (cycles per pixel; the lowest nonzero
    frequency stands in for ``k = 0``).
    ``slope < 0``: falling with frequency (blotchy); ``0``: white; ``> 0``: rising (grainy).

    Parameters
    ----------
    shape
        Array shape; the spectrum is isotropic over all its axes.
    slope
        Power-spectrum exponent.
    rng
        Random generator.

    Returns
    -------
    numpy.ndarray
        float32 of ``shape``.
    """
    white = rng.normal(size=shape)
    if slope == 0:
        out = white
    else:
        freqs = [np.fft.fftfreq(n) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
        grids = np.meshgrid(*freqs, indexing="ij", sparse=True)
        k = np.sqrt(sum(g**2 for g in grids))
        k = np.maximum(k, 1.0 / max(shape))
        f = np.fft.rfftn(white) * k ** (slope / 2)
        f.flat[0] = 0.0
        out = np.fft.irfftn(f, s=shape, axes=tuple(range(len(shape))))
    out = out - out.mean()
    return (out / (out.std() + 1e-12)).astype(np.float32)


def misalign(images: np.ndarray, shifts_px: np.ndarray, rotations_deg: np.ndarray) -> np.ndarray:
    """Shift and rotate each image about its centre (residual alignment errors).

    Parameters
    ----------
    images
        ``(n, y, x)`` images.
    shifts_px
        ``(n, 2)`` shifts ``(dy, dx)`` in pixels.
    rotations_deg
        ``(n,)`` in-plane rotations in degrees.

    Returns
    -------
    numpy.ndarray
        ``(n, y, x)`` float32 (cubic interpolation, edges extended).
    """
    from scipy.ndimage import affine_transform

    out = np.empty_like(images, dtype=np.float32)
    c = (np.array(images.shape[1:]) - 1) / 2
    for i, img in enumerate(images):
        a = np.radians(rotations_deg[i])
        m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        # Pull: out[o] = in[m (o - c) + c - shift].
        offset = c - m @ c - np.asarray(shifts_px[i], float)
        out[i] = affine_transform(img, m, offset=offset, order=3, mode="nearest")
    return out


def image_tilt_series(
    density: np.ndarray,
    angles_deg: np.ndarray,
    voxel_size_A: float,
    rng: np.random.Generator,
    snr: float | None = 0.1,
    ctf: bool = True,
    defocus_um: float = 3.0,
    phase_flip: bool = True,
    *,
    astigmatism_um: float = 0.0,
    astigmatism_angle_deg: float = 0.0,
    defocus_gradient: bool = False,
    defocus_step_A: float = 200.0,
    noise_slope: float = 0.0,
    detector_nx: int | None = None,
    alignment_shift_px: float = 0.0,
    alignment_rotation_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, object]:
    """Project, apply the CTF, misalign, add noise and (optionally) phase-flip.

    Parameters
    ----------
    density
        ``(z, y, x)`` mass density (protein positive).
    angles_deg
        Tilt angles.
    voxel_size_A
        Pixel size of the images.
    rng
        Random generator for the noise and the alignment errors.
    snr
        Signal-to-noise ratio of the images: variance of the noise-free images over
        the noise variance; ``None`` for no noise.
    ctf
        Apply a CTF (300 kV, Cs 2.7 mm, amplitude contrast 0.07).
    defocus_um
        Underfocus in µm (at the centre of the volume).
    phase_flip
        Phase-flip the recorded images before reconstruction (with the nominal,
        astigmatic CTF, the same for the whole image).
    astigmatism_um, astigmatism_angle_deg
        Astigmatism (see :func:`ctf_2d`).
    defocus_gradient
        Image each voxel at the defocus of its height along the beam (slices of
        ``defocus_step_A``): higher voxels (``h > 0``) are further from focus.
    defocus_step_A
        Height step of the defocus gradient in Å.
    noise_slope
        Exponent of the noise power spectrum (see :func:`coloured_noise`); 0 is white.
    detector_nx
        Detector width; narrower than the volume's x to let material outside the field
        of view into the images. Default: the volume's width.
    alignment_shift_px, alignment_rotation_deg
        Standard deviations of per-image shifts (each of y, x) and in-plane rotations
        left uncorrected.

    Returns
    -------
    images : numpy.ndarray
        ``(n_tilts, y, detector_nx)`` recorded (and phase-flipped) images, protein dark.
    clean : numpy.ndarray
        The same without noise.
    operator
        The projection operator of a volume as wide as the detector (reuse it for the
        back-projection).
    """
    nz, ny, nx = density.shape
    nd = nx if detector_nx is None else int(detector_nx)
    c = wide = None
    if ctf:
        c = ctf_2d(
            (ny, nd),
            voxel_size_A,
            defocus_um,
            astigmatism_um=astigmatism_um,
            astigmatism_angle_deg=astigmatism_angle_deg,
        )
    if ctf and defocus_gradient:
        step = defocus_step_A / voxel_size_A
        spec = np.zeros((len(angles_deg), ny, nd // 2 + 1), np.complex128)
        for h, part in height_sliced_operators((nz, nx), angles_deg, step, nd):
            ch = ctf_2d(
                (ny, nd),
                voxel_size_A,
                defocus_um + h * voxel_size_A * 1e-4,
                astigmatism_um=astigmatism_um,
                astigmatism_angle_deg=astigmatism_angle_deg,
            )
            spec += np.fft.rfft2(project(density, angles_deg, part)) * ch
        clean = np.fft.irfft2(spec, s=(ny, nd)).astype(np.float32)
        clean -= clean.mean(axis=(1, 2), keepdims=True)
    else:
        wide = projection_operator((nz, nx), angles_deg, nd)
        proj = project(density, angles_deg, wide)
        proj -= proj.mean(axis=(1, 2), keepdims=True)
        if ctf:
            clean = np.fft.irfft2(np.fft.rfft2(proj) * c, s=(ny, nd)).astype(np.float32)
        else:
            clean = -proj
    if alignment_shift_px > 0 or alignment_rotation_deg > 0:
        n = len(angles_deg)
        clean = misalign(
            clean,
            rng.normal(0.0, alignment_shift_px, (n, 2)),
            rng.normal(0.0, alignment_rotation_deg, n),
        )
    images = clean.copy()
    if snr is not None and snr > 0:
        sigma = np.sqrt(clean.var() / snr)
        if noise_slope == 0:
            images += rng.normal(0.0, sigma, size=images.shape).astype(np.float32)
        else:
            for i in range(len(images)):
                images[i] += sigma * coloured_noise(images.shape[1:], noise_slope, rng)
    if ctf and phase_flip:
        flip = -np.sign(c)
        images = np.fft.irfft2(np.fft.rfft2(images) * flip, s=(ny, nd)).astype(np.float32)
        clean = np.fft.irfft2(np.fft.rfft2(clean) * flip, s=(ny, nd)).astype(np.float32)
    # The reconstruction covers the field of view only (as wide as the detector).
    op = wide if wide is not None and nd == nx else projection_operator((nz, nd), angles_deg)
    return images, clean, op


def weighted_backprojection(images: np.ndarray, nz: int, operator) -> np.ndarray:
    """Weighted back-projection (ramp filter, then back-projection) to a ``(z, y, x)`` volume."""
    filtered = ramp_filter(images)
    vol = backproject(filtered, nz, operator)
    return (vol * (np.pi / max(1, images.shape[0]))).astype(np.float32)
