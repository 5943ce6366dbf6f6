"""Entry point of the ``cryoscout`` command.

Every command module imports only typer at import time and loads numpy,
torch and friends inside its function, so ``cryoscout --help`` is instant.
Errors a user can fix are printed as one line, without a traceback unless
``--debug`` is given.
"""

from __future__ import annotations

import logging
import sys

import typer

try:  # typer >= 0.2x ships its own copy of click; its exceptions are those classes
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer
    import click

from cryoscout import __version__
from cryoscout.cli import app as app_cli
from cryoscout.cli import (
    benchmark,
    explain,
    extract,
    guard,
    info,
    pick,
    screen,
    simulate,
    train,
)
from cryoscout.cli.help import CONTEXT_SETTINGS, Command

app = typer.Typer(
    name="cryoscout",
    help="Learned, explainable decisions for cryo-EM: grid screening and particle picking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT_SETTINGS,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cryoscout {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show info logs."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # Libraries that set their own logger's level (Lightning's INFO banner) pass the
    # root logger's level by propagation: the handler's level stops them.
    for handler in logging.getLogger().handlers:
        if getattr(handler, "stream", None) is sys.stderr:
            handler.setLevel(level)


# Grid screening
app.add_typer(simulate.app, name="simulate")
app.command("info", cls=Command)(info.info)
app.command("extract", cls=Command)(extract.extract)
app.command("train", cls=Command)(train.train)
app.command("explain", cls=Command)(explain.explain)
app.command("screen", cls=Command)(screen.screen)
app.add_typer(benchmark.app, name="benchmark")
app.command("app", cls=Command)(app_cli.app)
# Particle picking
app.add_typer(pick.app, name="pick")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 failure, 2 bad usage)."""
    args = sys.argv[1:] if argv is None else list(argv)
    with guard.quiet_warnings(debug="--debug" in args) as done:
        code = _run(args)
        done(code == 0)
    return code


def _run(args: list[str]) -> int:
    from cryoscout.errors import CryoscoutError
    from cryoscout.interrupt import signals_interrupt
    from cryoscout.runinfo import record_invocation

    record_invocation(["cryoscout", *args])
    _state["debug"] = "--debug" in args
    command = typer.main.get_command(app)
    guard.check_options(command)
    try:
        # Not command.main(): typer's turns Ctrl-C into a silent exit status.
        with signals_interrupt(), command.make_context("cryoscout", args) as ctx:
            command.invoke(ctx)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("cryoscout: aborted", file=sys.stderr)
        return 130
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:
        print(exc.format_message(), file=sys.stderr)  # a group called bare: show its help
        return 2
    except click.exceptions.UsageError as exc:
        # One line: which command, what is wrong (click's own text).
        where = exc.ctx.command_path if exc.ctx else "cryoscout"
        print(f"{where}: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except click.exceptions.ClickException as exc:
        print(f"cryoscout: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except CryoscoutError as exc:
        if _state["debug"]:
            raise
        print(f"cryoscout: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except Exception as exc:
        if _state["debug"]:
            raise
        name = " ".join(["cryoscout", *[a for a in args[:2] if not a.startswith("-")]])
        print(guard.unexpected_error_line(exc, name), file=sys.stderr)
        return 1
    return 0


def _interrupted(exc: KeyboardInterrupt) -> int:
    """Say that the run was stopped and how to continue; return 128 + the signal number."""
    import signal

    signum = getattr(exc, "signum", signal.SIGINT)
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    resume = getattr(exc, "resume", None)
    how = f"resume with: {resume}" if resume else "run the same command again to redo it"
    from cryoscout.progress import progress_enabled

    start = "\n" if progress_enabled() else ""  # after a progress bar's partial line
    print(f"{start}cryoscout: interrupted by {name}; {how}", file=sys.stderr)
    return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
