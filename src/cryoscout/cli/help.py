"""Help pages that read like a Unix tool's, whatever typer version is installed.

Typer's own help (0.2x) shows required arguments as ``{out}``, types as ``<list[Path]>``
and rewraps the worked examples of a docstring. :class:`Command` writes instead:
``Usage: cryoscout train [OPTIONS] FOLDER...``, one metavar per option
(``-o, --out DIR``), the real default or none, and everything after an
``Examples:`` line exactly as written.
"""

from __future__ import annotations

import inspect
import pathlib
import typing

from typer.core import TyperCommand

# click type name (older typer) or Python annotation (typer >= 0.2x) -> metavar
_TYPE_METAVAR = {"integer": "INT", "float": "FLOAT", "path": "PATH", "text": "TEXT"}
_ANNOTATION_METAVAR = {int: "INT", float: "FLOAT", str: "TEXT", pathlib.Path: "PATH"}

#: Typer/click settings every cryoscout command and group shares: ``-h`` is ``--help``.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
#: Help of --flat-field/--no-flat-field, the same in every command that stitches an atlas.
FLAT_FIELD_HELP = (
    "Divide the tiles by the beam's fall-off estimated from them (9 or more tiles). "
    "Turn off for tiles already flat-field corrected."
)


def metavar(param) -> str:
    """The placeholder for a parameter's value: its own metavar, else one from its type."""
    if param.metavar:
        return param.metavar
    if param.param_type_name == "argument":
        return param.name.upper()
    click_type = getattr(param, "type", None)
    if click_type is not None:
        name = getattr(click_type, "name", "text").split()[0]  # "integer range" -> "integer"
        return _TYPE_METAVAR.get(name, name.upper())
    annotation = param.type_descriptor.annotation
    while typing.get_args(annotation):  # list[Path], Path | None -> Path
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return _ANNOTATION_METAVAR.get(annotation, "VALUE")


def _usage_piece(param) -> str:
    text = metavar(param)
    if param.nargs != 1:
        text += "..."
    return text if param.required else f"[{text}]"


def _default_text(param) -> str | None:
    """What ``[default: ...]`` says, or None when nothing useful can be said."""
    show = getattr(param, "show_default", None)
    if isinstance(show, str):
        return show
    if show is False or param.required:
        return None
    value = param.default
    if getattr(param, "is_flag", False):
        # A --x/--no-x pair names the side that is on; a lone flag is simply off.
        if not param.secondary_opts:
            return None
        return param.opts[0] if value else param.secondary_opts[0]
    if value is None or callable(value):
        return None
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value) or None
    return str(value)


def help_record(param) -> tuple[str, str] | None:
    """``(names, help)`` of one parameter, or None when it is hidden."""
    if getattr(param, "hidden", False):
        return None
    if param.param_type_name == "argument":
        names = metavar(param) + ("..." if param.nargs != 1 else "")
    else:
        names = ", ".join(sorted(param.opts, key=lambda o: o.startswith("--")))  # -o, --out
        if param.secondary_opts:
            names += " / " + ", ".join(param.secondary_opts)
        if not getattr(param, "is_flag", False) and not getattr(param, "count", False):
            names += " " + metavar(param)
    text = (getattr(param, "help", None) or "").strip()
    default = _default_text(param)
    if param.required:
        text += "  [required]"
    elif default is not None and "default:" not in text.lower():
        # A help text that states its default in words ("default: the patch size")
        # says what -1 or 0 mean; the raw value would only contradict it.
        text += f"  [default: {default}]"
    return names, text.strip()


class Command(TyperCommand):
    """A typer command whose help shows real metavars, real defaults and verbatim examples."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        pieces += [_usage_piece(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]
        return pieces

    def format_help_text(self, ctx, formatter) -> None:
        text = inspect.cleandoc(self.help or "").partition("\f")[0]
        prose, marker, examples = text.partition("\nExamples:")
        if prose.strip():
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(prose.strip())
        if marker:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text("Examples:")
                formatter.write_paragraph()
                # Printed as written: shell line continuations and output lines stay intact.
                lines = [ln for ln in examples.strip("\n").splitlines() if ln.strip() != "\b"]
                indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
                pad = " " * (formatter.current_indent + 2)
                for line in lines:
                    formatter.write(pad + line[indent:] + "\n" if line.strip() else "\n")

    def format_options(self, ctx, formatter) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = help_record(param)
            if record is not None:
                (args if param.param_type_name == "argument" else opts).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)
