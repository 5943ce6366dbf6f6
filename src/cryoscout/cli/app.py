"""``cryoscout app``: the local web app to review, label and retrain grid screening."""

from __future__ import annotations

from pathlib import Path

import typer


def app(
    project: Path = typer.Argument(
        Path("cryoscout-project"), help="Project folder (created if needed)."
    ),
    example: bool = typer.Option(
        False,
        "--example",
        help="Fill the project with a simulated 12-grid cassette and two tomograms first.",
    ),
    example_atlases: int = typer.Option(
        12, "--example-atlases", help="Grids in the example cassette (1-12)."
    ),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on (non-loopback needs a token)."
    ),
    port: int = typer.Option(8765, help="Port to listen on."),
    token: str | None = typer.Option(
        None, help="Token every request must carry (generated for a non-loopback host)."
    ),
    data: list[Path] = typer.Option(
        [],
        "--data",
        help="Folder atlases and tomograms may come from (repeatable; default: current folder).",
    ),
) -> None:
    """Start the cryoscout app for a project and print its URL.

    Atlases are screened, and models trained, by background jobs with the same
    code as `cryoscout screen` and `cryoscout train`. Labels are saved the moment
    they are given. Stop the server with Ctrl-C.

    Examples:

        $ cryoscout app --example

        $ cryoscout app my-session --data /data/epu

        $ cryoscout app my-session --host 0.0.0.0 --port 8765
    """
    from cryoscout.app.server import resolve_token
    from cryoscout.errors import InputError

    if not 1 <= port <= 65535:
        raise InputError("--port", f"must be 1-65535, not {port}")
    if project.exists() and not project.is_dir():
        raise InputError(project, "exists and is not a folder")
    token = resolve_token(host, token)
    roots = list(data) or [Path.cwd()]
    if example:
        from cryoscout.app.example import make_example_project

        if not 1 <= example_atlases <= 12:
            raise InputError("--example-atlases", f"must be 1-12, not {example_atlases}")
        make_example_project(project, n=example_atlases).close()
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    if token:
        url += f"?token={token}"
    typer.echo(f"cryoscout app: project {project.resolve()}")
    typer.echo(f"open {url}   (Ctrl-C stops the server)")
    from cryoscout.app.serve import serve

    serve(project, host=host, port=port, token=token, data_roots=roots)
