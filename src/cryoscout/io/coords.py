"""Particle coordinates in and out: CSV, whitespace text, ``.coords``, RELION 4 and 5 STAR.

Inside cryoscout, coordinates are tomogram voxels ``x, y, z`` (0-based, x = column of the
array as mrcfile reads it) with a 1-based ``class``. On disk:

- CSV: a header with ``x, y, z`` and optionally ``class``, ``name`` (the class name) and
  ``score``.
- Whitespace text (``.txt``, ``.coords``): ``x y z`` or ``class x y z`` per line; ``#`` comments.
- RELION 4 STAR: ``rlnCoordinateX/Y/Z`` in pixels of the *unbinned tilt series* (optional
  ``rlnTomoName``, ``rlnClassNumber``, ``rlnAutopickFigureOfMerit`` as the score). RELION 4
  (and RELION 5 reading a RELION 4 file, ``ParticleSet::getParticleCoordDecenteredPixel``)
  uses these numbers as tilt-series pixels without rescaling, so a pick in a tomogram binned
  b times is written as ``voxel * b`` with ``b = voxel_size_A / tilt_series_pixel_size_A``
  (the same frame RELION 5 gets from its centred Ångströms when the unbinned size is b times
  the binned one). Because a tomogram reconstructed at the tilt-series pixel size is rare,
  writing RELION 4 refuses to guess: it needs the tilt-series pixel size (or the binning)
  whenever the voxel size is above :data:`MAX_UNBINNED_PIXEL_A` or unknown. Reading uses
  the tilt-series pixel size given, else ``rlnTomoTiltSeriesPixelSize`` from the file's
  optics table, and refuses likewise when neither is known and the voxel size suggests
  binning.
- RELION 5 STAR: ``rlnTomoName`` + ``rlnCenteredCoordinateX/Y/ZAngst``, in Å from the
  tomogram centre. RELION 5 (``ParticleSet::getParticleCoordDecenteredPixel``) converts
  with ``pixel = centred_A / pixel_size + centre`` where the centre is the tomogram size
  over two, so here ``voxel = centred_A / voxel_size_A + N / 2`` for each axis
  (N = tomogram size along that axis); reading and writing it needs the tomogram
  ``shape`` and ``voxel_size_A``. Written files carry no optics table: RELION 5 builds the
  optics groups from the tomogram set for freshly picked particles.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from cryoscout.errors import InputError

FORMATS = ("csv", "coords", "relion4", "relion5")
_R4 = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
_R5 = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
_SCORE_COLUMNS = ("rlnAutopickFigureOfMerit", "rlnLCCmax")

#: Largest voxel size (Å) taken to be an unbinned reconstruction. Tilt series are recorded
#: at about 0.8-3.5 Å per pixel; tomograms for picking are binned to 5-20 Å.
MAX_UNBINNED_PIXEL_A = 4.0

# Reconstruction names: what programs put around the tilt-series name (RELION 5 writes
# rec_TS_01.mrc, IMOD TS_01_rec.mrc or TS_01.rec, Warp TS_01_10.00Apx.mrc, denoisers add
# _denoised). See :func:`tomo_name_from_path`.
_NAME_PREFIXES = ("rec", "recon", "reconstruction")
_NAME_SUFFIXES = (
    r"rec|recon|reconstruction|full|flipped|flipz|rotx|ali|denoised|cryocare|isonet|"
    r"corrected|deconv|filtered|lowpass|bin\d+|\d+(\.\d+)?apx"
)
_EXTENSIONS = (".mrc", ".rec", ".map", ".st", ".ali", ".zarr", ".tif", ".tiff")
_GENERIC_STEMS = {"tomogram", "tomo", "rec", "recon", "reconstruction", "volume", "vol"}


def tomo_name_from_path(path: str | os.PathLike) -> str:
    """The tilt-series name RELION expects (``rlnTomoName``) from a tomogram's file name.

    Strips extensions (``.mrc, .rec, .map, .st, .ali, .zarr, .tif``), the prefixes
    ``rec_``, ``recon_``, ``reconstruction_`` and, repeatedly, the suffixes ``_rec``,
    ``_recon``, ``_reconstruction``, ``_full``, ``_flipped``, ``_flipz``, ``_rotx``, ``_ali``,
    ``_denoised``, ``_cryocare``, ``_isonet``, ``_corrected``, ``_deconv``, ``_filtered``,
    ``_lowpass``, ``_bin<N>`` and ``_<pixel size>Apx`` (separated by ``_``, ``.`` or ``-``,
    any case). When what is left is generic (``tomogram``, ``tomo``, ``rec``, ``recon``,
    ``reconstruction``, ``volume``, ``vol``), the parent folder's name is used, stripped
    the same way.

    Examples
    --------
    >>> tomo_name_from_path("tomograms/rec_TS_01.mrc")
    'TS_01'
    >>> tomo_name_from_path("TS_07_bin4_denoised.mrc")
    'TS_07'
    >>> tomo_name_from_path("TS_03.mrc_10.00Apx.mrc")
    'TS_03'
    >>> tomo_name_from_path("TS_12/tomogram.mrc")
    'TS_12'
    """
    path = Path(path)
    name = _strip_reconstruction_name(path.name)
    if name.lower() in _GENERIC_STEMS or not name:
        parent = _strip_reconstruction_name(path.resolve().parent.name)
        if parent and parent.lower() not in _GENERIC_STEMS:
            return parent
    return name or path.stem


def _strip_reconstruction_name(name: str) -> str:
    import re

    suffix = re.compile(rf"[._-](?:{_NAME_SUFFIXES})$", re.IGNORECASE)
    prefix = re.compile(rf"^(?:{'|'.join(_NAME_PREFIXES)})[._-]", re.IGNORECASE)
    while True:
        before = name
        for ext in _EXTENSIONS:
            if name.lower().endswith(ext) and len(name) > len(ext):
                name = name[: -len(ext)]
        stripped = suffix.sub("", name)
        name = stripped or name
        stripped = prefix.sub("", name)
        name = stripped or name
        if name == before:
            return name


def relion4_scale(
    path: str | os.PathLike,
    voxel_size_A: float | None,
    tilt_series_pixel_size_A: float | None,
    binning: float | None = None,
) -> float:
    """Tilt-series pixels per tomogram voxel for RELION 4 coordinates (the binning).

    Parameters
    ----------
    path
        The STAR file, named in errors.
    voxel_size_A
        Tomogram voxel size in Å (None when unknown).
    tilt_series_pixel_size_A
        Pixel size of the unbinned tilt series in Å.
    binning
        The binning factor itself, instead of the two sizes.

    Returns
    -------
    float
        ``binning``, else ``voxel_size_A / tilt_series_pixel_size_A``, else 1 when the voxel
        size is at most :data:`MAX_UNBINNED_PIXEL_A` (an unbinned tomogram).

    Raises
    ------
    InputError
        Neither the binning nor the tilt-series pixel size is known and the voxel size is
        unknown or suggests a binned tomogram; or a size is not positive.
    """
    if binning is not None:
        if not binning > 0:
            raise InputError(path, f"binning must be positive, got {binning}")
        return float(binning)
    if tilt_series_pixel_size_A is not None:
        if not tilt_series_pixel_size_A > 0:
            raise InputError(
                path, f"tilt-series pixel size must be positive, got {tilt_series_pixel_size_A}"
            )
        if voxel_size_A is None:
            raise InputError(
                path,
                "RELION 4 coordinates are tilt-series pixels: the tomogram's voxel size is "
                "unknown, so the binning cannot be computed; give the binning instead",
            )
        return float(voxel_size_A) / float(tilt_series_pixel_size_A)
    if voxel_size_A is not None and voxel_size_A <= MAX_UNBINNED_PIXEL_A:
        return 1.0
    seen = "unknown" if voxel_size_A is None else f"{voxel_size_A:g} Å, which suggests binning"
    raise InputError(
        path,
        "RELION 4 coordinates are in unbinned tilt-series pixels; give the tilt-series "
        f"pixel size (--tilt-series-pixel-size) or the binning: the tomogram voxel size is {seen}",
    )


def read_coords(
    path: str | os.PathLike,
    tomo_name: str | None = None,
    voxel_size_A: float | None = None,
    shape: tuple[int, int, int] | None = None,
    classes: Collection[int] | None = None,
    tilt_series_pixel_size_A: float | None = None,
    binning: float | None = None,
) -> pd.DataFrame:
    """Read particle coordinates from CSV, whitespace text or a RELION 4/5 STAR file.

    Parameters
    ----------
    path
        The file; the format follows the extension (``.star``, ``.csv``, anything else is
        whitespace text).
    tomo_name
        For STAR files listing several tomograms (``rlnTomoName``): the one to keep.
    voxel_size_A
        Tomogram voxel size in Å; needed for RELION 5 files.
    shape
        Tomogram array shape ``(z, y, x)``; needed for RELION 5 files, and when given,
        coordinates outside the volume are an error.
    classes
        Allowed class numbers; a coordinate of another class is an error.
    tilt_series_pixel_size_A, binning
        For RELION 4 files, whose coordinates are unbinned tilt-series pixels: the
        tilt-series pixel size (with ``voxel_size_A``) or the binning, to divide them back
        to tomogram voxels (see :func:`relion4_scale`; the file's optics
        ``rlnTomoTiltSeriesPixelSize`` is used when neither is given).

    Returns
    -------
    pandas.DataFrame
        ``class, x, y, z`` (voxels), plus ``score`` and ``name`` when the file has them.

    Raises
    ------
    InputError
        Unreadable file, unknown columns, coordinates outside the volume, unknown class.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    suffix = path.suffix.lower()
    if suffix == ".star":
        df = _read_star(path, tomo_name, voxel_size_A, shape, tilt_series_pixel_size_A, binning)
    elif suffix == ".csv":
        df = _read_csv(path)
    else:
        df = _read_text(path)
    return _validate(path, df, shape, classes)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path)
    except Exception as exc:
        raise InputError(path, f"not a readable CSV file ({exc})") from None
    cols = {c.strip().lower(): c for c in raw.columns}
    missing = [k for k in ("x", "y", "z") if k not in cols]
    if missing:
        raise InputError(
            path, f"needs columns x, y, z (and optionally class, score); found {list(raw.columns)}"
        )
    out = pd.DataFrame({k: raw[cols[k]] for k in ("x", "y", "z")})
    out.insert(0, "class", raw[cols["class"]] if "class" in cols else 1)
    if "score" in cols:
        out["score"] = raw[cols["score"]]
    if "name" in cols:
        out["name"] = raw[cols["name"]].astype(str)
    # A simulator's distractors.csv (negatives for `pick train`): what each point is and
    # how large, so that a vesicle gives points on its membrane.
    if "kind" in cols and "radius" in cols:
        out["kind"] = raw[cols["kind"]].astype(str)
        out["radius"] = pd.to_numeric(raw[cols["radius"]], errors="coerce")
        if not np.isfinite(out["radius"].to_numpy(float)).all():
            raise InputError(path, "the radius column must hold numbers")
    return out


def _read_text(path: Path) -> pd.DataFrame:
    rows = []
    widths: dict[int, int] = {}  # columns -> first line with that many
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise InputError(path, f"line {n}: expected numbers 'x y z' or 'class x y z'") from None
        if len(values) not in (3, 4):
            raise InputError(path, f"line {n}: expected 3 (x y z) or 4 (class x y z) columns")
        widths.setdefault(len(values), n)
        if len(widths) > 1:  # checked before padding: "1 2 3" may not sit beside "2 1 2 3"
            raise InputError(
                path,
                f"lines mix 3 and 4 columns (line {widths[3]}: x y z; "
                f"line {widths[4]}: class x y z)",
            )
        rows.append(values if len(values) == 4 else [1.0, *values])
    arr = np.array(rows, float).reshape(-1, 4)
    return pd.DataFrame({"class": arr[:, 0], "x": arr[:, 1], "y": arr[:, 2], "z": arr[:, 3]})


def _particle_table(path: Path) -> tuple[pd.DataFrame, float | None]:
    """The particle table, and the optics table's tilt-series pixel size when it has one."""
    import starfile

    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise InputError(path, f"not a readable STAR file ({exc})") from None
    tables = [v for v in data.values() if isinstance(v, pd.DataFrame)]
    optics = data.get("optics")
    ts_pixel = None
    if isinstance(optics, pd.DataFrame) and "rlnTomoTiltSeriesPixelSize" in optics:
        sizes = pd.to_numeric(optics["rlnTomoTiltSeriesPixelSize"], errors="coerce").unique()
        if len(sizes) == 1 and np.isfinite(sizes[0]) and sizes[0] > 0:
            ts_pixel = float(sizes[0])
    for key in ("particles", *data.keys()):
        t = data.get(key)
        if isinstance(t, pd.DataFrame) and (set(_R4) <= set(t) or set(_R5) <= set(t)):
            return t, ts_pixel
    found = sorted({c for t in tables for c in t.columns})
    raise InputError(
        path,
        "no particle coordinates: need rlnCoordinateX/Y/Z (RELION 4) or "
        f"rlnCenteredCoordinateX/Y/ZAngst (RELION 5); found {found[:8]}",
    )


def _read_star(path, tomo_name, voxel_size_A, shape, ts_pixel_A, binning) -> pd.DataFrame:
    t, file_ts_pixel_A = _particle_table(path)
    if "rlnTomoName" in t:
        names = sorted(t["rlnTomoName"].astype(str).unique())
        if tomo_name is not None:
            if tomo_name not in names:
                raise InputError(path, f"no tomogram {tomo_name!r} (has {', '.join(names)})")
            t = t[t["rlnTomoName"].astype(str) == tomo_name]
        elif len(names) > 1:
            raise InputError(path, f"lists several tomograms ({', '.join(names)}); choose one")
    if set(_R5) <= set(t):
        if voxel_size_A is None or shape is None:
            raise InputError(
                path, "RELION 5 centred coordinates need the tomogram's voxel size and shape"
            )
        centre = np.array(shape[::-1], float) / 2  # (x, y, z)
        xyz = _numbers(path, t, _R5) / voxel_size_A + centre
    else:
        ts_pixel_A = ts_pixel_A if ts_pixel_A is not None or binning else file_ts_pixel_A
        scale = relion4_scale(path, voxel_size_A, ts_pixel_A, binning)
        xyz = _numbers(path, t, _R4) / scale
    out = pd.DataFrame({"class": 1, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    if "rlnClassNumber" in t:
        out["class"] = t["rlnClassNumber"].to_numpy()
    for col in _SCORE_COLUMNS:
        if col in t:
            out["score"] = _numbers(path, t, [col])[:, 0]
            break
    return out


def _numbers(path: Path, table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``table[columns]`` as floats; a value that is not a number is an InputError."""
    try:
        return table[columns].to_numpy(float)
    except (ValueError, TypeError):
        bad = next(c for c in columns if pd.to_numeric(table[c], errors="coerce").isna().any())
        raise InputError(path, f"{bad} holds values that are not numbers") from None


def _validate(path, df, shape, classes) -> pd.DataFrame:
    try:
        df = df.astype({"x": float, "y": float, "z": float})
        cls = pd.to_numeric(df["class"])
    except (ValueError, TypeError):
        raise InputError(path, "coordinates and classes must be numbers") from None
    if not np.isfinite(cls).all() or (cls != np.round(cls)).any() or (cls < 1).any():
        raise InputError(path, "classes must be whole numbers from 1 (0 is background)")
    df["class"] = cls.astype(int)
    if not np.isfinite(df[["x", "y", "z"]].to_numpy()).all():
        raise InputError(path, "coordinates must be finite numbers")
    if classes is not None:
        bad = sorted(set(df["class"]) - {int(c) for c in classes})
        if bad:
            known = sorted(int(c) for c in classes)
            raise InputError(path, f"unknown class {bad[0]} (known: {_span(known)})")
    if shape is not None:
        nz, ny, nx = shape
        xyz = df[["x", "y", "z"]].to_numpy()
        # Voxel centres run from 0 to N-1; allow the half voxel around them.
        outside = (xyz < -0.5).any(1) | (xyz > np.array([nx, ny, nz]) - 0.5).any(1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            x, y, z = xyz[i]
            raise InputError(
                path,
                f"coordinate ({x:g}, {y:g}, {z:g}) is outside the {nx}x{ny}x{nz} volume "
                f"({int(outside.sum())} of {len(df)} outside)",
            )
    return df.reset_index(drop=True)


def _span(classes: list[int]) -> str:
    """``1-3`` for a run of classes, else the list."""
    if classes and classes == list(range(classes[0], classes[-1] + 1)) and len(classes) > 2:
        return f"{classes[0]}-{classes[-1]}"
    return ", ".join(map(str, classes))


def check_classes(
    tables: list[pd.DataFrame], paths: list[str | os.PathLike], n_classes: int | None = None
) -> int:
    """The number of classes of a set of annotations, checked: classes are 1..n.

    Parameters
    ----------
    tables
        Tables from :func:`read_coords`.
    paths
        Their files (named in errors).
    n_classes
        The number of classes declared by the user (class names, per-class radii);
        ``None`` to take the classes the annotations use, which must then be 1..n
        without gaps (so a stray ``99`` does not make a 99-class model).

    Returns
    -------
    int
        n, the number of classes.

    Raises
    ------
    InputError
        No particles, a class beyond ``n_classes``, or gaps in the classes used.
    """
    used: dict[int, str] = {}
    for table, path in zip(tables, paths, strict=True):
        for c in sorted(set(table["class"].astype(int))):
            used.setdefault(c, str(path))
    if not used:
        raise InputError(paths[0] if paths else None, "no annotated particles")
    if n_classes is not None:
        beyond = [c for c in sorted(used) if not 1 <= c <= n_classes]
        if beyond:
            c = beyond[0]
            raise InputError(used[c], f"class {c} is not among the {n_classes} declared classes")
        return n_classes
    top = max(used)
    missing = [c for c in range(1, top + 1) if c not in used]
    if missing:
        raise InputError(
            used[top],
            f"class {top} is used but class {missing[0]} is not: classes must be numbered "
            f"1..n (found {_span(sorted(used))}); declare them with --class-names",
        )
    return top


def write_picks(
    path: str | os.PathLike,
    picks: pd.DataFrame,
    fmt: str | None = None,
    tomo_name: str = "tomo",
    voxel_size_A: float | None = None,
    shape: tuple[int, int, int] | None = None,
    tilt_series_pixel_size_A: float | None = None,
    binning: float | None = None,
) -> Path:
    """Write picks as CSV, ``.coords``, RELION 4 or RELION 5 STAR, atomically.

    Parameters
    ----------
    path
        Destination.
    picks
        ``class, x, y, z`` (voxels) and optionally ``score`` and ``name`` (the class name,
        kept in CSV files).
    fmt
        ``csv``, ``coords``, ``relion4`` or ``relion5``; default from the extension
        (``.csv``, ``.coords``, ``.star`` = ``relion5``).
    tomo_name
        ``rlnTomoName`` of the STAR files (see :func:`tomo_name_from_path`).
    voxel_size_A, shape
        Tomogram voxel size (Å) and array shape ``(z, y, x)``: needed for ``relion5``.
    tilt_series_pixel_size_A, binning
        For ``relion4``: the unbinned tilt-series pixel size in Å (coordinates are
        multiplied by ``voxel_size_A / tilt_series_pixel_size_A``), or the binning factor.
        Needed unless the voxel size is at most :data:`MAX_UNBINNED_PIXEL_A`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        Unknown format; ``relion5`` without voxel size and shape; ``relion4`` when the
        voxel size is unknown or suggests binning and neither the tilt-series pixel size
        nor the binning is given (see :func:`relion4_scale`). Nothing is written then.
    """
    from cryoscout.io.atomic import atomic_path

    path = Path(path)
    if fmt is None:
        fmt = {".csv": "csv", ".coords": "coords", ".star": "relion5"}.get(path.suffix.lower())
        if fmt is None:
            raise InputError(
                path, f"cannot tell the format from the extension; use one of {FORMATS}"
            )
    if fmt not in FORMATS:
        raise InputError(path, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    cls = picks["class"].astype(int).to_numpy()
    xyz = picks[["x", "y", "z"]].to_numpy(float)
    score = picks["score"].to_numpy(float) if "score" in picks else None
    if fmt == "relion4":
        xyz = xyz * relion4_scale(path, voxel_size_A, tilt_series_pixel_size_A, binning)
    elif fmt == "relion5" and (voxel_size_A is None or shape is None):
        raise InputError(
            path, "RELION 5 centred coordinates need the tomogram voxel size and shape"
        )
    with atomic_path(path) as tmp:
        if fmt == "csv":
            out = pd.DataFrame({"class": cls, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
            if "name" in picks:
                out.insert(1, "name", picks["name"].astype(str).to_numpy())
            if score is not None:
                out["score"] = score
            out.to_csv(tmp, index=False, float_format="%.4f")
        elif fmt == "coords":
            lines = [
                f"{c} {_num(x)} {_num(y)} {_num(z)}" for c, (x, y, z) in zip(cls, xyz, strict=True)
            ]
            tmp.write_text("".join(line + "\n" for line in lines))
        else:
            import starfile

            table = pd.DataFrame({"rlnTomoName": [tomo_name] * len(cls)})
            if fmt == "relion4":
                for i, col in enumerate(_R4):
                    table[col] = xyz[:, i]
            else:
                centre = np.array(shape[::-1], float) / 2
                cen = (xyz - centre) * voxel_size_A
                for i, col in enumerate(_R5):
                    table[col] = cen[:, i]
            table["rlnClassNumber"] = cls
            if score is not None:
                table["rlnAutopickFigureOfMerit"] = score
            starfile.write({"particles": table}, tmp, overwrite=True)
    return path


def _num(v: float) -> str:
    """Integers without decimals, others with enough digits to round-trip a voxel grid."""
    return str(int(v)) if float(v).is_integer() else f"{v:.4f}"
