"""The man pages in man/ are those the Typer app generates today, and every command shows an example."""

from __future__ import annotations

from pathlib import Path

from mmzcli.manpages import write_pages

MAN = Path(__file__).resolve().parent.parent / "man"


def test_man_pages_are_up_to_date(tmp_path):
    fresh = {p.name: p.read_text() for p in write_pages(tmp_path)}
    shipped = {p.name: p.read_text() for p in MAN.glob("mmz*.1")}
    assert sorted(shipped) == sorted(fresh), "man/ lacks or has extra pages: run make man"
    stale = [name for name in fresh if fresh[name] != shipped[name]]
    assert not stale, f"stale man pages {stale}: run make man"


def test_every_command_page_has_an_example(tmp_path):
    pages = write_pages(tmp_path)
    commands = [p for p in pages if p.name not in ("mmz.1", "mmz-profiles.1")]
    assert len(commands) >= 10
    for page in commands:
        assert "Example: mmz " in page.read_text(), page.name
