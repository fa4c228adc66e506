"""Render the mirror state machine as a Mermaid diagram, straight from the transition table.

``python -m linkd.link.diagram`` prints it; docs/design.md embeds the output and a test keeps the two in
step, so the documented diagram can never drift from the code.
"""

from __future__ import annotations

from .states import MIRROR_TRANSITIONS


def mermaid() -> str:
    lines = ["stateDiagram-v2", "    [*] --> ACTIVE: mirror create"]
    for (state, event), target in sorted(MIRROR_TRANSITIONS.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)):
        if state is target:
            continue  # repeats that change nothing (idempotent commands) would clutter the picture
        lines.append(f"    {state.value} --> {target.value}: {event.value}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid())
