"""Particle coordinates in and out: CSV, whitespace text, ``.coords``, RELION 4 and 5 STAR.

Inside cryoscout, coordinates are tomogram voxels ``x, y, z`` (0-based, x = column of the
array as mrcfile reads it) with a 1-based ``class``. On disk:

- CSV: a header with ``x, y, z`` and optionally ``class`` and ``score``.
- Whitespace text (``.txt``, ``.coords``): ``x y z`` or ``class x y z`` per line; ``#`` comments.
- RELION 4 STAR: ``rlnCoordinateX/Y/Z`` in pixels (optional ``rlnTomoName``,
  ``rlnClassNumber``, ``rlnAutopickFigureOfMerit`` as the score).
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


def read_coords(
    path: str | os.PathLike,
    tomo_name: str | None = None,
    voxel_size_A: float | None = None,
    shape: tuple[int, int, int] | None = None,
    classes: Collection[int] | None = None,
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

    Returns
    -------
    pandas.DataFrame
        ``class, x, y, z`` (voxels), plus ``score`` when the file has one.

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
        df = _read_star(path, tomo_name, voxel_size_A, shape)
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


def _particle_table(path: Path) -> pd.DataFrame:
    import starfile

    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise InputError(path, f"not a readable STAR file ({exc})") from None
    tables = [v for v in data.values() if isinstance(v, pd.DataFrame)]
    for key in ("particles", *data.keys()):
        t = data.get(key)
        if isinstance(t, pd.DataFrame) and (set(_R4) <= set(t) or set(_R5) <= set(t)):
            return t
    found = sorted({c for t in tables for c in t.columns})
    raise InputError(
        path,
        "no particle coordinates: need rlnCoordinateX/Y/Z (RELION 4) or "
        f"rlnCenteredCoordinateX/Y/ZAngst (RELION 5); found {found[:8]}",
    )


def _read_star(path, tomo_name, voxel_size_A, shape) -> pd.DataFrame:
    t = _particle_table(path)
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
        xyz = _numbers(path, t, _R4)
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
    if (cls != np.round(cls)).any() or (cls < 1).any():
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
) -> Path:
    """Write picks as CSV, ``.coords``, RELION 4 or RELION 5 STAR, atomically.

    Parameters
    ----------
    path
        Destination.
    picks
        ``class, x, y, z`` (voxels) and optionally ``score``.
    fmt
        ``csv``, ``coords``, ``relion4`` or ``relion5``; default from the extension
        (``.csv``, ``.coords``, ``.star`` = ``relion5``).
    tomo_name
        ``rlnTomoName`` of the STAR files.
    voxel_size_A, shape
        Tomogram voxel size (Å) and array shape ``(z, y, x)``: needed for ``relion5``.

    Returns
    -------
    pathlib.Path
        ``path``.
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
    with atomic_path(path) as tmp:
        if fmt == "csv":
            out = pd.DataFrame({"class": cls, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
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
                if voxel_size_A is None or shape is None:
                    raise InputError(
                        path, "RELION 5 centred coordinates need the tomogram voxel size and shape"
                    )
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
