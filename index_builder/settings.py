"""Builder settings from the environment (prefix DOTCOS_); CLI flags override them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BuilderSettings(BaseSettings):
    """Everything the builder reads from the environment, validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="DOTCOS_", extra="ignore")

    index_root: Path = Path("./indexes")
    build_threads: int | None = Field(default=None, ge=1)
    block_mb: int = Field(default=32, ge=1)
    crash_at: str | None = None
    log_level: str = "INFO"
