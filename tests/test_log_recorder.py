"""The decision log line (pdp.audit.record.LogRecorder): what it leaves out, and when it is
written — before record() returns without the trail, after the loop's current step behind it."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from pdp.audit.record import LogRecorder

RECORD = {
    "decision_id": "d1",
    "allow": True,
    "input": {"tenant": "acme"},
    "prompt": {"sha256": "ab", "text": "secret prompt", "redacted": "s***"},
}


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "pdp.decisions"]


async def test_the_line_leaves_out_the_input_and_the_prompt_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "pdp.decisions")

    await LogRecorder().record(RECORD)

    assert lines(caplog) == [{"decision_id": "d1", "allow": True, "prompt": {"sha256": "ab"}}]


async def test_deferred_lines_are_written_after_the_current_step_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "pdp.decisions")
    recorder = LogRecorder(deferred=True)

    for i in range(3):
        await recorder.record({**RECORD, "decision_id": f"d{i}"})
    assert lines(caplog) == []
    await asyncio.sleep(0)

    assert [line["decision_id"] for line in lines(caplog)] == ["d0", "d1", "d2"]
    assert all("input" not in line and line["prompt"] == {"sha256": "ab"} for line in lines(caplog))


async def test_nothing_is_kept_when_info_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pdp.decisions")
    recorder = LogRecorder(deferred=True)

    await recorder.record(RECORD)
    await asyncio.sleep(0)

    assert lines(caplog) == [] and recorder._pending == []
