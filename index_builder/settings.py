"""Builder settings from the environment (prefix DOTCOS_); CLI flags override them.

Every setting is an environment variable `DOTCOS_<NAME>`; the settings reference
(docs/reference/settings.md) is rendered from this model by `python -m docsgen`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BuilderSettings(BaseSettings):
    """Everything the builder reads from the environment, validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="DOTCOS_", extra="ignore")

    index_root: Path = Field(Path("./indexes"), description="where versions are published (--root overrides)")
    build_threads: int | None = Field(
        None, ge=1, description="FAISS threads of a build (--threads overrides; default: all cores)"
    )
    block_mb: int = Field(32, ge=1, description="memory budget of one streamed block of vectors, in MiB")
    crash_at: str | None = Field(None, description="test hook: the build step at which to kill the process")
    log_level: str = Field("info", description="debug, info, warning or error (--quiet: warning)")
