"""docs/design.md embeds the state diagram generated from the transition table; keep them equal."""

from pathlib import Path

from linkd.link.diagram import mermaid


def test_design_note_diagram_matches_transition_table():
    text = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
    embedded = text.split("<!-- diagram:start -->")[1].split("<!-- diagram:end -->")[0]
    assert embedded.strip() == f"```mermaid\n{mermaid()}\n```"
