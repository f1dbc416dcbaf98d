"""``coregister --config FILE.toml``: option defaults for every command from one TOML file.

The file holds one table per command, named as on the command line
(``[register]``, ``[geo.coreg]``, ``[batch]``), whose keys are the long
option names without dashes (``preset``, ``fixed-mask`` or ``fixed_mask``,
``json``). Values set there become the options' defaults (click's
``default_map``); anything given on the command line wins. Unknown
commands, unknown keys and wrong values are usage errors (exit code 2) that
name the offending key and the valid ones. The file is data (TOML, never
evaluated): a relative path in it is relative to the file's own folder and
may not lead out of it (``../``); give an absolute path for anything
elsewhere.

Example file::

    [register]
    preset = "affine"
    metric = "mattes"
    report = true

    [geo.coreg]
    mode = "local"
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["config_option", "config_origin", "load_config"]

# ctx.meta key: (config path, {(table, parameter name): (key as written, value)})
_ORIGINS = "coregister.config_origins"


def _aliases(command: click.Command) -> dict[str, str]:
    """Accepted key -> parameter name: the parameter's name and its long options without dashes (``-`` or ``_``)."""
    out: dict[str, str] = {}
    for param in command.params:
        if param.name is None or param.name in ("help", "version"):
            continue
        names = {param.name}
        names.update(opt.lstrip("-") for opt in getattr(param, "opts", ()) if opt.startswith("--"))
        for name in names:
            out[name] = param.name
            out[name.replace("-", "_")] = param.name
            out[name.replace("_", "-")] = param.name
    return out


def _shown_keys(command: click.Command) -> list[str]:
    """Keys to suggest: long option names without dashes, argument names."""
    keys = []
    for param in command.params:
        if param.name is None or param.name in ("help", "version"):
            continue
        longs = [opt.lstrip("-") for opt in getattr(param, "opts", ()) if opt.startswith("--")]
        keys.append(longs[0] if longs else param.name)
    return keys


def _path_value(value: Any, base: Path, where: str, key: str) -> Any:
    """A path value of the file, relative to its folder ``base``; a relative path leading out of it is refused."""
    import os

    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return value
    joined = base / path
    try:
        Path(os.path.realpath(joined)).relative_to(os.path.realpath(base))
    except ValueError:
        raise click.BadParameter(
            f"[{where}] {key} = {value!r} leads out of the configuration file's folder; give an absolute path",
            param_hint="--config",
        ) from None
    return str(joined)


def _normalise(
    ctx: click.Context, command: click.Command, table: dict[str, Any], where: str,
    origins: dict[tuple[str, str], tuple[str, Any]] | None = None, base: Path | None = None,
) -> dict[str, Any]:
    """``table`` with its keys as parameter names; ``origins[(where, name)]`` records each key as written.

    Values of path options are made relative to ``base`` (the file's folder).
    """
    origins = {} if origins is None else origins
    aliases = _aliases(command)
    params = {p.name: p for p in command.params}
    subcommands: dict[str, click.Command] = {}
    if isinstance(command, click.Group):
        subcommands = {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}  # type: ignore[misc]
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key in subcommands and subcommands[key] is not None:
            out[key] = _normalise(ctx, subcommands[key], value, f"{where}.{key}", origins, base)
        elif key in aliases:
            param = params.get(aliases[key])
            if base is not None and param is not None and isinstance(param.type, click.Path):
                value = _path_value(value, base, where, key)
            out[aliases[key]] = value
            origins[(where, aliases[key])] = (key, value)
        else:
            valid = sorted(set(_shown_keys(command)) | set(subcommands))
            kind = "command" if isinstance(value, dict) else "option"
            raise click.BadParameter(
                f"[{where}] has no {kind} {key!r}; valid keys: {', '.join(valid) or '(none)'}", param_hint="--config"
            )
    return out


def load_config(ctx: click.Context, path: Path) -> dict[str, Any]:
    """Read ``path`` and return the ``default_map`` for the root group of ``ctx`` (validated)."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{str(path)!r} is not valid TOML: {exc}", param_hint="--config") from exc
    group = ctx.command
    assert isinstance(group, click.Group)
    default_map: dict[str, Any] = {}
    origins: dict[tuple[str, str], tuple[str, Any]] = {}
    for name, table in raw.items():
        command = group.get_command(ctx, name)
        if command is None or not isinstance(table, dict):
            commands = ", ".join(group.list_commands(ctx))
            raise click.BadParameter(
                f"{str(path)!r}: top-level key {name!r} is not a [command] table; use one of: {commands}",
                param_hint="--config",
            )
        default_map[name] = _normalise(ctx, command, table, name, origins, Path(path).parent)
    ctx.meta[_ORIGINS] = (path, origins)
    return default_map


def config_origin(error: click.UsageError) -> str | None:
    """Where a bad value came from when ``--config`` set it: ``run.toml [register] preset = "afine"``; else None.

    Click converts values of its ``default_map`` like command-line values;
    its message then names the option, which the user never typed.
    """
    ctx, param = error.ctx, getattr(error, "param", None)
    if ctx is None or param is None or param.name is None:
        return None
    if ctx.get_parameter_source(param.name) is not click.core.ParameterSource.DEFAULT_MAP:
        return None
    loaded = ctx.meta.get(_ORIGINS)
    if loaded is None:
        return None
    path, origins = loaded
    table = ".".join(ctx.command_path.split()[1:])
    if (table, param.name) not in origins:
        return None
    key, value = origins[(table, param.name)]
    return f"{path} [{table}] {key} = {_toml(value)}"


def _toml(value: Any) -> str:
    """``value`` as TOML writes it (strings quoted, true/false, arrays)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _callback(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is None:
        return
    loaded = load_config(ctx, value)
    ctx.default_map = {**(ctx.default_map or {}), **loaded}


def config_option(function: Any) -> Any:
    """The root group's ``--config FILE.toml`` option (see the module docstring)."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        callback=_callback,
        expose_value=False,
        help="TOML file of option defaults, one [command] table per command ([register], [geo.coreg], ...); "
        "options given on the command line win.",
    )(function)
