"""The settings reference: every variable of the settings models, its default and its meaning."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings

from index_builder.settings import BuilderSettings
from service.settings import ServiceSettings

INTRO = """# Settings

Every setting is an environment variable `DOTCOS_<NAME>`, read and validated once at start-up: a bad
value stops `dotcos-serve` or `dotcos-build` with exit code 2 and one line naming the variable. The
builder's command-line flags override its settings. Generated from `index_builder/settings.py` and
`service/settings.py` by `python -m docsgen`.
"""

SECTIONS: tuple[tuple[str, type[BaseSettings], str], ...] = (
    ("The service (`dotcos-serve`)", ServiceSettings, "Read by every worker; the same in a container."),
    ("The builder (`dotcos-build`)", BuilderSettings, "Flags of the same meaning override them."),
)


def _default(model: type[BaseSettings], name: str) -> str:
    field = model.model_fields[name]
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None or value == []:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path) and not value.is_absolute():
        return f"`./{value}`"
    return f"`{value}`"


def table(model: type[BaseSettings]) -> str:
    """One Markdown row per field; a field without a description is a bug the check reports."""
    lines = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} needs a description")
        lines.append(f"| `DOTCOS_{name.upper()}` | {_default(model, name)} | {field.description} |")
    return "\n".join(lines)


def render() -> str:
    parts = [INTRO]
    for title, model, note in SECTIONS:
        parts.append(f"## {title}\n\n{note}\n\n{table(model)}\n")
    return "\n".join(parts)
