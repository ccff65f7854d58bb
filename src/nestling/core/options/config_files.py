"""The one reader of TOML and YAML files (config files, hyperparameter spaces).

Callers word the errors: each knows which flag the path came from. YAML is read with a SafeLoader that follows
YAML 1.2 for floats (``1e-3`` is a float, not the string PyYAML's 1.1 rules give), so a learning rate written
the same way reads the same from either format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TOML_SUFFIXES = (".toml",)
YAML_SUFFIXES = (".yaml", ".yml")


class MalformedFile(ValueError):
    """The text does not parse as `fmt` ("TOML" or "YAML"); str() is the parser's message."""

    def __init__(self, fmt: str, message: str) -> None:
        super().__init__(message)
        self.fmt = fmt


def file_format(path: Path) -> str:
    """"YAML" for .yaml/.yml, else "TOML"."""
    return "YAML" if path.suffix.lower() in YAML_SUFFIXES else "TOML"


def read(path: Path) -> Any:
    """Parse a TOML or YAML file (an empty YAML file is {}). Raises OSError or UnicodeDecodeError when the file
    cannot be read, MalformedFile when it does not parse."""
    return parse(path.read_text(encoding="utf-8"), file_format(path))


def parse(text: str, fmt: str) -> Any:
    if fmt == "TOML":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise MalformedFile(fmt, str(err)) from err
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise MalformedFile(fmt, str(err)) from err
    return {} if data is None else data


def _yaml_loader() -> type:
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return _Loader
