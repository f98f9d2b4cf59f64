"""The command-line reference, rendered from `dotcos-build`'s argparse parsers."""

from __future__ import annotations

import argparse

from index_builder import cli

INTRO = """# `dotcos-build`

The builder and the operator's tool: builds and publishes versions, and moves `CURRENT`, aliases,
routes and the change journal. Also `python -m index_builder`. Generated from the parsers in
`index_builder/cli.py` by `python -m docsgen`; `dotcos-build COMMAND --help` prints the same.

Exit codes, for schedulers: **0** done, **2** bad input (one line on stderr naming the file, row or
flag), **1** any other failure. A failed or killed command never changes what is served.
"""


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """Each subcommand's name, one-line help and parser, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.default in (None, False, argparse.SUPPRESS):
        return ""
    return f"`{action.default}`"


def _flag(action: argparse.Action) -> str:
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.nargs == 0:
        return names
    if action.metavar:
        meta = str(action.metavar)
    elif action.choices:
        meta = "{" + ",".join(str(choice) for choice in action.choices) + "}"
    else:
        meta = action.dest.upper()
    return f"{names} `{meta}`"


def _table(parser: argparse.ArgumentParser) -> str:
    rows = ["| flag | default | what it does |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        text = (action.help or "").replace("|", "\\|")
        rows.append(f"| {_flag(action)} | {_default(action)} | {text} |")
    return "\n".join(rows)


def render() -> str:
    parser = cli.build_parser()
    usage = " ".join(parser.format_usage().split())
    parts = [INTRO, f"```text\n{usage}\n```\n", _table(parser) + "\n"]
    for name, about, sub in _commands(parser):
        usage = " ".join(sub.format_usage().split())
        parts.append(f"## `{name}`\n\n{about}\n\n```text\n{usage}\n```\n\n{_table(sub)}\n")
    return "\n".join(parts)
