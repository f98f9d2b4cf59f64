"""The README's settings tables are the settings models: every variable, its default and its meaning.

`python -m tests.test_settings_docs` rewrites the tables from the models.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from index_builder.settings import BuilderSettings
from service.settings import ServiceSettings

README = Path(__file__).resolve().parents[1] / "README.md"
MODELS: dict[str, type[BaseSettings]] = {"service": ServiceSettings, "builder": BuilderSettings}


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
    lines = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} needs a description"
        lines.append(f"| `DOTCOS_{name.upper()}` | {_default(model, name)} | {field.description} |")
    return "\n".join(lines)


def _block(which: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- settings:{which} -->\n)([^<]*?)(\n<!-- /settings -->)")


def test_the_readme_tables_are_the_settings_models() -> None:
    text = README.read_text()
    for which, model in MODELS.items():
        found = _block(which).search(text)
        assert found, f"README has no <!-- settings:{which} --> block"
        assert found.group(2) == table(model), f"README {which} settings differ: python -m tests.test_settings_docs"


if __name__ == "__main__":
    text = README.read_text()
    for which, model in MODELS.items():
        text = _block(which).sub(lambda m, md=model: m.group(1) + table(md) + m.group(3), text)
    README.write_text(text)
