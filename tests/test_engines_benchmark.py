"""benchmarks/engines.py's decision scenarios: what each engine stores for the same two messages."""

from benchmarks.engines import decisions_table, run_decisions


def test_retraction_is_forgotten_by_classic_and_kept_beside_by_mem0():
    results = run_decisions(["retraction"])
    classic, mem0 = results["retraction | classic"], results["retraction | mem0"]
    assert classic["events"] == ["ADD", "DELETE"] and classic["stored"] == []
    assert mem0["events"] == ["ADD", "ADD"] and mem0["stored"] == ["Lives in Hangzhou", "No longer lives in Hangzhou"]
    assert (classic["llm_calls"], mem0["llm_calls"]) == (3, 2)  # classic: extract twice + one decision
    assert mem0["prompt_chars"] > 10 * classic["prompt_chars"]  # mem0 2.x sends its long prompt with every add
    assert "| retraction | mem0 | ADD / ADD |" in decisions_table(results)
