"""Print every resource the example stack (Pulumi.test.yaml) creates: type, logical and AWS name.

    python -m tests.infra.resource_list            # the example config
    python -m tests.infra.resource_list --rule-set-name company-inbound

Runs the whole program under the same mocks as the tests; no AWS access needed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # allow `python tests/infra/resource_list.py` too
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.infra.harness import (
    COMPONENT_TYPE_PREFIX,
    PROVIDER_TYPE_PREFIX,
    ProgramRun,
    run_program,
    stack_config,
)


def resource_lines(run: ProgramRun) -> list[str]:
    """One line per resource: each component (by name), then its children (by type, name)."""
    resources = [r for r in run if not r.type.startswith(PROVIDER_TYPE_PREFIX)]
    components = sorted((r for r in resources if r.type.startswith(COMPONENT_TYPE_PREFIX)), key=lambda r: r.name)
    urns = {r.urn for r in components}
    width = max(len(r.type) for r in resources)
    lines: list[str] = []
    for component in components:
        lines.append(f"{component.type:<{width}}  {component.name}")
        children = sorted((r for r in resources if r.parent == component.urn), key=lambda r: (r.type, r.name))
        for child in children:
            physical = f"  ({child.physical_name})" if child.physical_name else ""
            lines.append(f"  {child.type:<{width - 2}}  {child.name}{physical}")
    orphans = [r for r in resources if r not in components and r.parent not in urns]
    lines.extend(f"{r.type:<{width}}  {r.name}  (NOT IN A COMPONENT)" for r in orphans)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule-set-name", help="simulate ses-mail:ruleSetName (existing rule set)")
    args = parser.parse_args(argv)
    overrides = {"ruleSetName": args.rule_set_name} if args.rule_set_name else {}
    run = run_program(stack_config(**overrides))
    lines = resource_lines(run)
    print("\n".join(lines))
    count = sum(1 for r in run if r.custom and not r.type.startswith(PROVIDER_TYPE_PREFIX))
    print(f"\n{count} AWS resources in {len(lines) - count} components")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
