"""The project directory and its ``mmz.yaml``: which survey, which inputs, what was run.

``mmz.yaml`` keeps a snapshot of the survey profile (so a project stays
reproducible when the shipped profile changes), the inputs that
``build-cubes`` reads when given no arguments, and a history of commands.
"""

from __future__ import annotations

import datetime as _dt
import shlex
from pathlib import Path
from typing import Any

from mmzcli import __version__
from mmzcli.atomic import atomic_write_text
from mmzcli.errors import ConfigError
from mmzcli.profiles import Profile, load_profile, profile_from_dict, read_yaml_mapping

CONFIG_NAME = "mmz.yaml"
DEFAULT_COLUMNS = {"id": "ID", "ra": "RA", "dec": "DEC", "z_spec": "Z_SPEC", "ebv": "EBV"}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_config(project: Path) -> dict[str, Any] | None:
    """The project's ``mmz.yaml`` as a mapping, or None where there is none."""
    path = Path(project) / CONFIG_NAME
    if not path.exists():
        return None
    return read_yaml_mapping(path, "the project's settings", "fix it, or remove it and run mmz build-cubes again")


def write_config(
    project: Path,
    profile: Profile,
    *,
    tiles: str | None = None,
    catalog: str | None = None,
    columns: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Create or update ``mmz.yaml``: profile snapshot, inputs (paths relative to the project)."""
    import yaml

    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    config = read_config(project) or {"mmz_version": __version__, "created": now()}
    config["profile"] = profile.to_dict()
    inputs = config.setdefault("inputs", {})
    if tiles is not None:
        inputs["tiles"] = tiles
    if catalog is not None:
        inputs["catalog"] = catalog
    if columns is not None:
        inputs["columns"] = {**DEFAULT_COLUMNS, **columns}
    config.update(extra or {})
    path = project / CONFIG_NAME
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return path


def record_command(project: Path, argv: list[str]) -> None:
    """Append a command line to the project's history (where the project has a config)."""
    import yaml

    config = read_config(project)
    if config is None:
        return
    config.setdefault("history", []).append(
        {"time": now(), "mmz_version": __version__, "command": shlex.join(["mmz", *argv])}
    )
    atomic_write_text(Path(project) / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))


def project_profile(project: Path, requested: str | None) -> Profile:
    """The survey profile for a command run in ``project``.

    ``requested`` (a name or path) wins; it must agree with the project's
    snapshot by name, so that one project never mixes two surveys.
    """
    config = read_config(project)
    snapshot = config.get("profile") if config else None
    if requested is None:
        if snapshot is None:
            raise ConfigError(
                f"{Path(project) / CONFIG_NAME}: no survey profile recorded; pass --survey/--profile NAME"
            )
        return profile_from_dict(snapshot, source=str(Path(project) / CONFIG_NAME))
    profile = load_profile(requested)
    if snapshot is not None and snapshot.get("name") != profile.name:
        raise ConfigError(
            f"{Path(project) / CONFIG_NAME}: this project is for survey "
            f"'{snapshot.get('name')}', not '{profile.name}'; use another --project"
        )
    if snapshot is not None:
        return profile_from_dict(snapshot, source=str(Path(project) / CONFIG_NAME))
    return profile
