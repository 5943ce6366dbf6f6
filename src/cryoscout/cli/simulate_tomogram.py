"""``cryoscout simulate tomogram``: a cryo-electron tomogram with known particles."""

from __future__ import annotations

from pathlib import Path

import typer


def _parse_shape(text: str) -> tuple[int, int, int]:
    from cryoscout.errors import InputError

    try:
        x, y, z = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError("--shape", f"expected three integers x,y,z, got {text!r}") from None
    if min(x, y, z) < 16:
        raise InputError("--shape", "each dimension must be at least 16 voxels")
    return z, y, x


def tomogram(
    out: Path = typer.Argument(..., metavar="OUT", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same output."),
    templates: Path | None = typer.Option(
        None, "--templates", help="Folder of template maps <name>.mrc (default: simple shapes)."
    ),
    classes: str | None = typer.Option(
        None, "--classes", help="Comma-separated template names to use, e.g. 4v94,4cr2."
    ),
    shape: str = typer.Option("512,512,200", "--shape", help="Volume size x,y,z in voxels."),
    voxel_size: float = typer.Option(10.0, "--voxel-size", help="Voxel size in Å."),
    particles: int = typer.Option(300, "--particles", help="Number of particles."),
    thickness_nm: float | None = typer.Option(
        None, "--thickness-nm", help="Ice slab thickness in nm (default: 80% of z)."
    ),
    snr: float = typer.Option(0.1, "--snr", help="Image SNR (variance ratio); 0 for none."),
    ctf: bool = typer.Option(True, "--ctf/--no-ctf", help="Apply a CTF (and phase-flip)."),
    defocus_um: float = typer.Option(3.0, "--defocus-um", help="Underfocus in µm."),
    tilt_range: float = typer.Option(60.0, "--tilt-range", help="Maximum tilt in degrees."),
    tilt_step: float = typer.Option(3.0, "--tilt-step", help="Tilt increment in degrees."),
    membranes: int = typer.Option(0, "--membranes", help="Vesicle-like membranes to add."),
    fiducials: int = typer.Option(0, "--fiducials", help="Gold beads to add."),
    # What differs between microscopes and samples (docs/simulator.md); all off by default.
    distractors: int = typer.Option(
        0, "--distractors", help="Non-annotated proteins to add (listed in distractors.csv)."
    ),
    distractor_classes: str | None = typer.Option(
        None,
        "--distractor-classes",
        help="Their template names in --templates (default: simple shapes).",
    ),
    complexes: int = typer.Option(
        0,
        "--complexes",
        help="Also this many kinds of large complexes, each packed from randomly rotated "
        "--distractor-classes maps (docs/simulator.md); --distractors proteins are drawn "
        "from every kind.",
    ),
    decoys: bool = typer.Option(
        False,
        "--decoys/--no-decoys",
        help="Also the --classes maps enlarged 1.3-1.6 times, not annotated (size decoys: "
        "docs/simulator.md); --distractors proteins are drawn from them too.",
    ),
    noise_slope: float = typer.Option(
        0.0, "--noise-slope", help="Noise power ~ k^slope: 0 white, <0 falling, >0 rising."
    ),
    astigmatism_um: float = typer.Option(
        0.0, "--astigmatism-um", help="Astigmatism: largest minus smallest defocus in µm."
    ),
    astigmatism_angle: float = typer.Option(
        0.0, "--astigmatism-angle", help="Direction of the largest defocus in degrees from x."
    ),
    defocus_gradient: bool = typer.Option(
        False,
        "--defocus-gradient/--no-defocus-gradient",
        help="Defocus follows each voxel's height (across the tilt axis and with depth).",
    ),
    outside_material: bool = typer.Option(
        False,
        "--outside-material/--no-outside-material",
        help="Specimen continues beyond the field of view (enters the images at high tilt).",
    ),
    alignment_shift: float = typer.Option(
        0.0, "--alignment-shift", help="Residual per-tilt shift errors, std in pixels."
    ),
    alignment_rotation: float = typer.Option(
        0.0, "--alignment-rotation", help="Residual per-tilt rotation errors, std in degrees."
    ),
    intensity_scale: float = typer.Option(
        1.0, "--intensity-scale", help="Tomogram units: scale of the zero-mean, unit-std map."
    ),
    intensity_offset: float = typer.Option(
        0.0, "--intensity-offset", help="Tomogram units: offset added after scaling."
    ),
) -> None:
    """Simulate a tomogram with ground truth: tomogram.mrc, particles.csv, occupancy.mrc.

    distractors.csv lists what is in the volume but not annotated (gold, vesicles,
    --distractors proteins), so false picks on it can be counted.

    Particles (SHREC 2021 template maps or simple shapes) are placed without overlap at
    random positions and orientations in an ice slab, imaged as a tilt series with CTF and
    noise, and reconstructed by weighted back-projection (so the missing wedge shows).
    Protein is dark in tomogram.mrc, as in real tomograms.

    Examples:

        $ cryoscout simulate tomogram sim1 --seed 1 --shape 256,256,100 --particles 80

        $ cryoscout simulate tomogram sim2 --seed 2 --templates ../shared/data/templates_10A \\
            --classes 4v94,4cr2,3d2f --membranes 2 --fiducials 5

        $ cryoscout simulate tomogram sim3 --seed 3 --templates ../shared/data/templates_10A \\
            --classes 4v94,4cr2 --distractors 30 --distractor-classes 5mrc,3d2f \\
            --noise-slope -1 --astigmatism-um 1 --defocus-gradient --outside-material \\
            --alignment-shift 0.5 --intensity-scale 37 --intensity-offset 512

        $ cryoscout simulate tomogram sim4 --seed 4 --templates ../shared/data/templates_10A \\
            --classes 4v94,4cr2 --distractors 30 --distractor-classes 1bxn,2cg9,3qm1 \\
            --complexes 6

        $ cryoscout simulate tomogram sim5 --seed 5 --templates ../shared/data/templates_10A \\
            --classes 4v94,4cr2 --distractors 30 --distractor-classes 1bxn,2cg9,3qm1 --decoys
    """
    from cryoscout.errors import InputError
    from cryoscout.io.runfolder import run_folder
    from cryoscout.progress import track
    from cryoscout.runinfo import write_run_config
    from cryoscout.simulate.tomogram import (
        TomogramConfig,
        load_templates,
        simulate_tomogram,
        write_simulated_tomogram,
    )

    if min(particles, membranes, fiducials, distractors, complexes) < 0:
        raise InputError("--particles", "counts must not be negative")
    if tilt_step <= 0 or not 0 < tilt_range <= 90:
        raise InputError("--tilt-range", "need 0 < tilt range <= 90 and a positive step")
    if voxel_size <= 0:
        raise InputError("--voxel-size", "must be positive")
    class_list = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    maps = {}
    if templates is not None:
        maps = load_templates(templates, class_list)
    elif class_list:
        from cryoscout.simulate.tomo_phantom import SHAPES

        unknown = [c for c in class_list if c not in SHAPES]
        if unknown:
            raise InputError(
                "--classes", f"unknown shape {unknown[0]!r} (without --templates: {SHAPES})"
            )
    if alignment_shift < 0 or alignment_rotation < 0 or astigmatism_um < 0:
        raise InputError("--alignment-shift", "error sizes and astigmatism must not be negative")
    if intensity_scale <= 0:
        raise InputError("--intensity-scale", "must be positive (protein stays dark)")
    distractor_list = (
        [c.strip() for c in distractor_classes.split(",") if c.strip()]
        if distractor_classes
        else None
    )
    distractor_maps = {}
    if distractor_list and templates is not None:
        distractor_maps = load_templates(templates, distractor_list)
    elif distractor_list:
        raise InputError("--distractor-classes", "needs --templates (the folder of their maps)")
    if complexes and not distractor_maps:
        raise InputError("--complexes", "needs --distractor-classes (the subunits' maps)")
    if complexes:
        from cryoscout.simulate.tomo_complexes import complex_maps

        # Their own stream of the seed, so adding complexes moves nothing else's draw.
        distractor_maps.update(complex_maps(distractor_maps, complexes, [seed, 5]))
    if decoys:
        if not maps:
            raise InputError("--decoys", "needs --templates and --classes (the maps to enlarge)")
        if not distractors:
            raise InputError("--decoys", "needs --distractors (decoys are drawn among them)")
        from cryoscout.simulate.tomo_decoys import enlarged_maps

        distractor_maps.update(enlarged_maps(maps, [seed, 6]))
    config = TomogramConfig(
        shape=_parse_shape(shape),
        voxel_size_A=voxel_size,
        n_particles=particles,
        slab_thickness_nm=thickness_nm,
        templates=maps,
        tilt_range_deg=tilt_range,
        tilt_step_deg=tilt_step,
        snr=snr if snr > 0 else None,
        ctf=ctf,
        defocus_um=defocus_um,
        n_membranes=membranes,
        n_fiducials=fiducials,
        n_distractors=distractors,
        distractor_templates=distractor_maps,
        noise_slope=noise_slope,
        astigmatism_um=astigmatism_um,
        astigmatism_angle_deg=astigmatism_angle,
        defocus_gradient=defocus_gradient,
        outside_material=outside_material,
        alignment_shift_px=alignment_shift,
        alignment_rotation_deg=alignment_rotation,
        intensity_scale=intensity_scale,
        intensity_offset=intensity_offset,
    )
    if class_list and not maps:
        config.shapes = tuple(class_list)
    # Checked and locked before the work; the folder appears only when complete.
    with run_folder(out) as folder:
        sim = simulate_tomogram(config, seed=seed, progress=track)
        paths = write_simulated_tomogram(sim, folder)
        record = config.summary()
        record.update(
            seed=seed,
            templates_dir=str(templates) if templates else None,
            particles_placed=len(sim.particles),
            class_names=sim.class_names,
            contrast="protein dark (lower values); zero mean, unit std before intensity_scale "
            "and intensity_offset",
            distractors_placed=sim.distractors["kind"].value_counts().to_dict(),
            ctf_correction="phase flip" if ctf else "none",
        )
        write_run_config(folder, record)
    paths = {k: out.absolute() / Path(p).relative_to(folder) for k, p in paths.items()}
    typer.echo(
        f"placed {len(sim.particles)} of {particles} particles "
        f"({len(sim.class_names)} classes); wrote {paths['tomogram']}, {paths['particles']}, "
        f"{paths['occupancy']}"
    )
