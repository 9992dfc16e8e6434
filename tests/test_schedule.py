"""Schedule strings: values as drqv2's utils.schedule, and one-line ConfigErrors for malformed specs."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.schedule import parse_schedule, schedule


@pytest.mark.parametrize("spec", [0.2, "0.2", " 0.2 ", "2e-1"])
def test_constants(spec: str | float) -> None:
    assert schedule(spec, 0) == pytest.approx(0.2) and schedule(spec, 10**9) == pytest.approx(0.2)
    assert schedule(1, 5) == 1.0


@pytest.mark.parametrize(
    ("step", "value"), [(0, 1.0), (50, 0.55), (100, 0.1), (101, 0.1), (10**7, 0.1), (25, 0.775)]
)
def test_linear(step: int, value: float) -> None:
    assert schedule("linear(1.0,0.1,100)", step) == pytest.approx(value, abs=1e-12)
    assert schedule("linear(1.0, 0.1, 100)", step) == pytest.approx(value, abs=1e-12)


def test_linear_paper_default() -> None:
    # DrQ-v2 medium tasks: 1.0 -> 0.1 over 500k agent steps
    assert schedule("linear(1.0,0.1,500000)", 250000) == pytest.approx(0.55)
    assert schedule("linear(1.0,0.1,500000)", 3000) == pytest.approx(1.0 - 0.9 * 3000 / 500000)


@pytest.mark.parametrize(
    ("step", "value"),
    [(0, 1.0), (50, 0.75), (100, 0.5), (101, 0.5 - 0.4 / 200), (200, 0.3), (300, 0.1), (10**6, 0.1)],
)
def test_step_linear(step: int, value: float) -> None:
    assert schedule("step_linear(1.0,0.5,100,0.1,200)", step) == pytest.approx(value, abs=1e-12)


def test_parse_once_call_many() -> None:
    s = parse_schedule("linear(2,0,4)")
    assert [s(t) for t in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    assert all(isinstance(s(t), float) for t in range(3))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("linear(1.0,0.1)", "got 2 argument"),
        ("linear(1.0,0.1,100,5)", "got 4 argument"),
        ("step_linear(1.0,0.5,100)", "init,final1,duration1,final2,duration2"),
        ("linear(a,0.1,100)", "must be a number"),
        ("linear(1.0,0.1,0)", "durations must be > 0"),
        ("step_linear(1,0.5,10,0.1,-3)", "durations must be > 0"),
        ("linear(1.0,nan,100)", "finite"),
        ("cosine(1.0,0.1,100)", "expected a number"),
        ("linear 1.0,0.1,100", "expected a number"),
        ("", "expected a number"),
        ("inf", "finite"),
        (True, "expected a number"),
        (None, "expected a number or a string"),
    ],
)
def test_malformed_specs_raise_one_line_config_errors(spec: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_schedule(spec)  # type: ignore[arg-type]
    message = str(info.value)
    assert fragment in message and "\n" not in message
