"""The one command-line builder of the pipeline stages: a run config's dataclass becomes its command line.

Every field of the schema (declared with :func:`vlmdiff.run_config.setting`) is a flag ``--name`` with its
help text, its default and its choices (a registry's names); its ``aliases`` (the reference's flag names)
are further option strings of the same flag, and further keys of the same setting in ``--config`` files
and ``key=value`` (``caption_model=_blip`` is ``caption_folder=_blip``). On top of the flags:

* ``--config FILE``: a YAML file of the same settings;
* ``key=value`` anywhere on the command line (before, between or after flags), in YAML syntax
  (``image_size=128``, ``classes=[bottle,cable]``, ``end_ind=null``);
* ``--print_config``: print the resolved settings as YAML and exit.

A boolean setting is ``--name`` / ``--no_name``, and also ``--name true`` / ``--name false``. A list setting
declared with ``nargs="+"`` takes several values (``--classes disc weave``, or ``--classes disc,weave``).

Later wins: defaults, ``--config``, flags, ``key=value``. A misspelt key or flag names the closest setting;
a required setting left empty is named. Both are one line (``error: ...`` through
:func:`vlmdiff.errors.cli_main`, exit status 2), before anything is written.

    cli = ConfigCommandLine(TestConfig, prog=prog, description=__doc__)
    cli.add_argument("--predict", metavar="FOLDER", help="...")   # an option that is not a setting
    args = cli.parse_args(argv)
    cfg = cli.resolve(args)

A stage whose command line is its settings and nothing else: ``command_line, main = stage_command(stage, __doc__)``.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any, Sequence

from vlmdiff.run_config import closest, config_yaml, key_aliases, resolve_run_config, unknown_setting

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # key=value (a dotted key reaches into a nested value)


class UsageError(ValueError):
    """A command line that cannot be run (an unknown flag or key, a bad value, a required setting missing)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, no usage block
        raise UsageError(message)


class _Switch(argparse.Action):
    """``--name`` sets True, ``--no_name`` sets False."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no_"))


class _Several(argparse.Action):
    """``--name a b`` and ``--name a,b``: one list of every value given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [item for value in values for item in value])


def show(value: Any) -> str:
    """A default as it would be written as ``key=value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def field_default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def choices_of(f: Field) -> tuple[str, ...] | None:
    """The field's choices: its metadata's sequence, or what its function returns (a registry's names)."""
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def _base_type(hint) -> tuple[Any, bool]:
    """``int | None`` -> ``(int, True)``; ``Any`` -> ``(Any, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), True
    return hint, False


def _yaml_value(text: str):
    import yaml

    return yaml.safe_load(text)


def _list_value(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _checked(name: str, choices: Sequence[str], convert=str):
    def parse(text: str):
        value = convert(text)
        if value not in choices:
            guess = closest(str(value), choices)
            hint = f"did you mean {guess!r}? " if guess else ""
            raise argparse.ArgumentTypeError(f"{value!r} is not a valid {name}; {hint}choices: {', '.join(choices)}")
        return value

    return parse


class ConfigCommandLine:
    """The command line of the run config ``schema``; other options go to :meth:`add_argument`."""

    def __init__(self, schema: type, *, prog: str | None = None, description: str | None = None,
                 exclude: Sequence[str] = ()):
        self.schema = schema
        self.fields = [f for f in fields(schema) if f.name not in exclude]
        self.parser = _Parser(prog=prog, description=description, usage="%(prog)s [options] [key=value ...]",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        run = self.parser.add_argument_group("run config", textwrap.fill(
            "The settings below come from a YAML file (--config), flags, or key=value anywhere on the command "
            "line (YAML values: image_size=128 classes=[bottle,cable] end_ind=null); later wins: defaults, "
            "--config, flags, key=value. A boolean is --name, --no_name or --name true|false. --debug: the "
            "traceback of an error.", width=100))
        run.add_argument("--config", metavar="FILE", help=f"YAML file of {schema.__name__} settings")
        run.add_argument("--print_config", action="store_true", help="print the resolved settings as YAML and exit")
        run.add_argument("overrides", nargs="*", metavar="key=value", help="a setting, e.g. image_size=128")
        self.settings = self.parser.add_argument_group(f"settings ({schema.__name__})")
        hints = typing.get_type_hints(schema)
        for f in self.fields:
            self._add_field(f, hints[f.name])
        self.options = self.parser.add_argument_group("options of this command")

    def _add_field(self, f: Field, hint) -> None:
        meta = f.metadata
        names = [f"--{f.name}", *meta.get("aliases", ())]
        default = field_default(f)
        text = f"{meta.get('help', '')} (default: {show(default)})".strip()
        if meta.get("aliases"):
            text += f"; {', '.join(meta['aliases'])}: the reference's name"
        kind, _ = _base_type(hint)
        if kind is bool:
            self.settings.add_argument(*names, f"--no_{f.name}", dest=f.name, action=_Switch, default=None, help=text)
            return
        convert = {int: int, float: float, str: str}.get(kind)
        metavar = meta.get("metavar")
        several = {}
        if convert is None:
            convert = _list_value if typing.get_origin(kind) is list else _yaml_value
            metavar = metavar or ("A,B,..." if typing.get_origin(kind) is list else "VALUE")
            if typing.get_origin(kind) is list and meta.get("nargs"):
                several = {"nargs": meta["nargs"], "action": _Several}
                metavar = meta.get("metavar") or "A"
        choices = choices_of(f)
        if choices is not None:
            convert = _checked(f.name, choices, convert)
            metavar = metavar or "{" + ",".join(choices) + "}"
        metavar = metavar or {int: "N", float: "X"}.get(kind, "TEXT")
        self.settings.add_argument(*names, dest=f.name, type=convert, default=None, metavar=metavar, help=text,
                                   **several)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        """An option of the command that is not a setting of the run config (``--predict``, ``--use_dino``)."""
        return self.options.add_argument(*args, **kwargs)

    def parse_args(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """Flags and ``key=value`` overrides in any order; unknown flags and keys name the closest setting."""
        argv = self._switch_values(list(sys.argv[1:] if argv is None else argv))
        args, extra = self.parser.parse_known_intermixed_args(argv)
        self._split_several(args)
        for token in extra:
            if token.startswith("-"):
                flag = token.split("=", 1)[0]
                options = [o for a in self.parser._actions for o in a.option_strings]
                guess = closest(flag, options)
                raise UsageError(f"unknown flag {flag!r}" + (f"; did you mean {guess!r}?" if guess else ""))
        for token in [*args.overrides, *extra]:
            if not OVERRIDE.match(token):
                raise UsageError(f"unexpected argument {token!r}: settings are --name value or name=value")
            key = token.split("=", 1)[0].split(".", 1)[0]
            if key not in {f.name for f in fields(self.schema)} | key_aliases(self.schema).keys():
                raise UsageError(unknown_setting(key, self.schema))
        return args

    def _switch_values(self, argv: list[str]) -> list[str]:
        """``--name true`` / ``--name=true`` -> ``--name``; ``--name false`` -> ``--no_name`` (boolean settings)."""
        switches = {o: a.option_strings[-1] for a in self.settings._group_actions if isinstance(a, _Switch)
                    for o in a.option_strings if not o.startswith("--no_")}
        out, i = [], 0
        while i < len(argv):
            token, value = argv[i], None
            if "=" in token and token.split("=", 1)[0] in switches:
                token, value = token.split("=", 1)
            elif token in switches and i + 1 < len(argv) and argv[i + 1].lower() in ("true", "false"):
                value, i = argv[i + 1], i + 1
            if token in switches and value is not None:
                if value.lower() not in ("true", "false"):
                    raise UsageError(f"argument {token}: {value!r} is not true or false")
                token = token if value.lower() == "true" else switches[token]
            out.append(token)
            i += 1
        return out

    def _split_several(self, args: argparse.Namespace) -> None:
        """A several-values flag stops at the first ``key=value``: that one and the rest are overrides."""
        for action in self.settings._group_actions:
            values = getattr(args, action.dest, None)
            if isinstance(action, _Several) and values:
                cut = next((i for i, v in enumerate(values) if OVERRIDE.match(v)), len(values))
                setattr(args, action.dest, values[:cut])
                args.overrides = [*values[cut:], *args.overrides]
                if not values[:cut]:
                    raise UsageError(f"argument {action.option_strings[0]}: expected at least one value")

    def flags(self, args: argparse.Namespace) -> dict[str, Any]:
        """The settings given as flags (None: not given)."""
        return {f.name: getattr(args, f.name, None) for f in self.fields}

    def resolve(self, args: argparse.Namespace, flags: dict[str, Any] | None = None):
        """The run config: defaults, ``--config``, ``flags`` (default: :meth:`flags`), ``key=value``.

        ``--print_config`` prints the result and exits (status 0) before any check. Required settings left
        empty are refused naming their flag, and values outside their choices (from a file or ``key=value``)
        naming the setting.
        """
        cfg = resolve_run_config(self.schema, config_file=args.config,
                                 flags=self.flags(args) if flags is None else flags, overrides=args.overrides)
        if args.print_config:
            print(config_yaml(cfg), end="")
            raise SystemExit(0)
        for f in self.fields:
            value, choices = getattr(cfg, f.name), choices_of(f)
            if f.metadata.get("required") and value in (None, "", [], ()):
                raise UsageError(f"--{f.name} is required: {f.metadata.get('help', '')}".rstrip(": "))
            if choices is not None and value is not None and value not in choices:
                guess = closest(str(value), choices)
                raise UsageError(f"{f.name}: {value!r} is not one of {', '.join(choices)}"
                                 + (f"; did you mean {guess!r}?" if guess else ""))
        return cfg


def stage_command(stage, description: str | None = None):
    """``(command_line, main)`` of a stage whose command line is its run config's settings and nothing else.

    ``stage``: the stage's :mod:`vlmdiff.pipelines` module (``Config``, ``run``); ``main(argv=None, prog=None)``
    resolves the settings and returns ``stage.run(cfg)``.
    """

    def command_line(prog: str | None = None) -> ConfigCommandLine:
        """Every setting of the stage's run config a flag."""
        return ConfigCommandLine(stage.Config, prog=prog, description=description)

    def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
        """The settings of the command line, then the stage's ``run(cfg)``."""
        cli = command_line(prog)
        return stage.run(cli.resolve(cli.parse_args(argv)))

    return command_line, main
