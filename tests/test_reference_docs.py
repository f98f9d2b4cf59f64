"""The generated reference pages (CLI, settings, HTTP API) are what their sources render now.

`python -m docsgen` rewrites them after an intended change of a parser, a settings model or a route.
"""

from __future__ import annotations

import argparse

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings

from docsgen import cli_pages, http_pages, settings_pages
from docsgen.__main__ import stale


def test_every_generated_page_is_current() -> None:
    assert stale() == [], "generated reference pages are stale: python -m docsgen"


def test_every_setting_is_documented_with_its_default() -> None:
    class Knobs(BaseSettings):
        depth: int = Field(5, description="how deep")
        token: str | None = Field(None, description="who may")

    assert settings_pages.table(Knobs).splitlines()[2:] == [
        "| `DOTCOS_DEPTH` | `5` | how deep |",
        "| `DOTCOS_TOKEN` | unset | who may |",
    ]

    class Silent(BaseSettings):
        depth: int = 5

    with pytest.raises(ValueError, match="Silent.depth needs a description"):
        settings_pages.table(Silent)


def test_a_route_no_page_claims_fails_the_render() -> None:
    with pytest.raises(ValueError, match="/v1/collections/{name}/teleport"):
        http_pages._group_of("/v1/collections/{name}/teleport")


def test_the_cli_page_lists_every_flag_of_every_command() -> None:
    page = cli_pages.render()
    parser = cli_pages.cli.build_parser()
    for name, _, sub in cli_pages._commands(parser):
        assert f"## `{name}`" in page
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert f"`{action.option_strings[0]}`" in page, (name, action.option_strings)
