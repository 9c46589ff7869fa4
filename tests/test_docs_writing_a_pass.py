"""docs/writing-a-pass.md works as written: its pass, rule and tests run unchanged."""

from __future__ import annotations

import re
from pathlib import Path

from lepton_compiler import pass_manager

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-pass.md"


def test_the_guide_code_runs_as_written() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {"__name__": "writing_a_pass_guide"}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
        tests = [v for k, v in namespace.items() if k.startswith("test_") and callable(v)]
        assert len(tests) == 2
        for test in tests:
            test()
        # The rule version does the same rewrite.
        from lepton_compiler.pass_manager import PassContext
        from lepton_compiler.testing import graph_from_text, op_list

        g = graph_from_text(namespace["TEXT"])
        rule_pass = pass_manager.get_pass("double_negation_rule")()
        assert rule_pass(g, PassContext(verify_each=True)).modified
        assert op_list(g) == ["Relu"]
    finally:
        for name in ("remove_double_negation", "double_negation_rule"):
            pass_manager._REGISTRY.pop(name, None)
