"""The `notagen` console script.

Every subcommand is a plain typed function somewhere in the package; this module turns its signature into argparse
options and its docstring into `--help`. Parameters without a default become positional arguments, the others
`--options` (underscores become dashes); `bool` options become `--flag/--no-flag`; `list[...]` takes several values;
`Literal[...]` restricts choices. The docstring's first paragraph is the description; an `Args:` section
(Google style) gives each parameter's help line; anything after `Examples:` is shown verbatim at the end.

Commands are imported lazily so `notagen --help` and light commands do not pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from notagen.errors import NotaGenError

# Subcommand name -> "module:function". Nested names ("data build") form groups.
COMMANDS: dict[str, str] = {
    "data build": "notagen.data.build:build_command",
    "convert": "notagen.convert:convert_command",
    "check": "notagen.abc.check:check_command",
    "train": "notagen.train.loop:train_command",
    "plot-loss": "notagen.train.plot:plot_loss_command",
    "convert-checkpoint": "notagen.checkpoint:convert_checkpoint_command",
    "generate": "notagen.generation.cli:generate_command",
    "prompts": "notagen.generation.cli:prompts_command",
    "encoder train": "notagen.encoder.train:train_encoder_command",
    "eval": "notagen.metrics.evaluate:eval_command",
    "serve": "notagen.serve.cli:serve_command",
    "dpo": "notagen.dpo.loop:dpo_command",
}

# Short forms shared by every command that has such a parameter.
SHORT_OPTIONS: dict[str, str] = {"output": "-o", "n": "-n", "out": "-o"}

SUMMARIES: dict[str, str] = {
    "data": "Build training datasets from scores.",
    "encoder": "Train and inspect the music encoder used for metrics.",
}


def _resolve(target: str) -> Callable[..., Any]:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str], str]:
    """Split a Google-style docstring into (description, {param: help}, examples)."""
    if not doc:
        return "", {}, ""
    doc = inspect.cleandoc(doc)
    sections = re.split(r"^(Args|Arguments|Returns|Raises|Examples?):\s*$", doc, flags=re.MULTILINE)
    description = sections[0].strip()
    params: dict[str, str] = {}
    examples = ""
    for title, body in zip(sections[1::2], sections[2::2]):
        if title in ("Args", "Arguments"):
            current = None
            for line in body.splitlines():
                match = re.match(r"^\s{0,8}(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
                if match:
                    current = match.group(1).lstrip("*")
                    params[current] = match.group(2).strip()
                elif current and line.strip():
                    params[current] += " " + line.strip()
        elif title.startswith("Example"):
            examples = "examples:\n" + "\n".join("  " + ln for ln in inspect.cleandoc(body).splitlines())
    return description, params, examples


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _add_parameter(parser: argparse.ArgumentParser, param: inspect.Parameter, hint: Any, help_text: str) -> None:
    annotation = _unwrap_optional(hint)
    origin = typing.get_origin(annotation)
    positional = param.default is inspect.Parameter.empty
    flag = "--" + param.name.replace("_", "-")
    kwargs: dict[str, Any] = {"help": help_text or None}

    if annotation is bool:
        if positional:
            raise TypeError(f"bool parameter {param.name} needs a default")
        parser.add_argument(flag, dest=param.name, action=argparse.BooleanOptionalAction, default=param.default,
                            help=(help_text + " " if help_text else "") + f"(default: {param.default})")
        return
    if origin is list:
        kwargs["type"] = _converter(typing.get_args(annotation)[0])
        # Lists may be empty (e.g. `data build --corpus music21` has no input paths); the command checks.
        kwargs["nargs"] = "*"
    elif origin is Literal:
        kwargs["choices"] = list(typing.get_args(annotation))
        kwargs["type"] = type(kwargs["choices"][0])
    else:
        kwargs["type"] = _converter(annotation)
    if positional:
        parser.add_argument(param.name, metavar=param.name.upper(), **kwargs)
    else:
        default = param.default
        kwargs["default"] = default
        if default not in (None, "", []) and kwargs.get("help") is not None:
            kwargs["help"] += f" (default: {default})"
        flags = [flag] + ([SHORT_OPTIONS[param.name]] if param.name in SHORT_OPTIONS else [])
        parser.add_argument(*flags, dest=param.name, **kwargs)


def _converter(annotation: Any) -> Callable[[str], Any]:
    if annotation in (str, int, float, Path):
        return annotation
    return str


def _build_command_parser(subparsers: Any, name: str, target: str) -> None:
    func = _resolve(target)
    description, param_help, examples = _parse_docstring(func.__doc__)
    summary = description.split("\n\n")[0].replace("\n", " ")
    parser = subparsers.add_parser(
        name, help=summary, description=description, epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(func)
    for param in inspect.signature(func).parameters.values():
        _add_parameter(parser, param, hints.get(param.name, str), param_help.get(param.name, ""))
    parser.set_defaults(_func=func)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the parser. Only commands under the first word `only` are imported (None: none, for top-level help)."""
    from notagen import __version__

    parser = argparse.ArgumentParser(
        prog="notagen",
        description="NotaGen-style symbolic music generation: build data, train, generate, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"notagen {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    groups: dict[str, Any] = {}
    for name, target in COMMANDS.items():
        words = name.split()
        if words[0] != only:
            # A placeholder lists the command in the top-level help without importing its module.
            if words[0] not in groups:
                summary = SUMMARIES.get(words[0]) if len(words) > 1 else _cheap_summary(target)
                groups[words[0]] = subparsers.add_parser(words[0], help=summary)
            continue
        if len(words) == 1:
            _build_command_parser(subparsers, name, target)
            continue
        if words[0] not in groups:
            group_parser = subparsers.add_parser(words[0], help=SUMMARIES.get(words[0]))
            groups[words[0]] = group_parser.add_subparsers(title="commands", metavar="COMMAND")
        _build_command_parser(groups[words[0]], words[1], target)
    return parser


def _cheap_summary(target: str) -> str | None:
    """Summary line for the top-level help, read from the source so no module (and no torch) is imported."""
    module_name, func_name = target.split(":")
    package_root = Path(__file__).resolve().parent.parent
    source_path = package_root.joinpath(*module_name.split(".")).with_suffix(".py")
    if not source_path.is_file():
        return None
    source = source_path.read_text(encoding="utf-8")
    match = re.search(rf"def {func_name}\(.*?\).*?:\s*\"\"\"(.*?)(?:\n\s*\n|\"\"\")", source, flags=re.S)
    return " ".join(match.group(1).split()) if match else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `notagen` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    only = first if first and any(name.split()[0] == first for name in COMMANDS) else None
    parser = build_parser(only=only)
    args = parser.parse_args(argv)
    func = getattr(args, "_func", None)
    if func is None:
        parser.print_help()
        return 0 if not argv else 2
    kwargs = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    try:
        result = func(**kwargs)
    except NotaGenError as error:
        print(f"notagen: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("notagen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
