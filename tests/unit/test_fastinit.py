"""roxd.fastinit: the cheaper __init__ of the per-event records keeps the dataclass's contract."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from roxd import model
from roxd.fastinit import fast_init
from roxd.sensor.records import Decoded

FAST = (model.ExecEvent, model.ExitEvent, model.ConnectEvent, model.FileEvent, model.Ancestor,
        model.Process, model.BaselineFacts, model.EnrichedEvent, model.ActionResult,
        model.RuleMatch, model.Alert, Decoded)


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_same_signature_as_the_dataclass_would_generate(cls: type) -> None:
    twin = dataclasses.dataclass(frozen=True, slots=True)(
        type(cls.__name__, (), {"__annotations__": {f.name: f.type for f in
                                                    dataclasses.fields(cls)},
                                **{f.name: f.default for f in dataclasses.fields(cls)
                                   if f.default is not dataclasses.MISSING}}))
    assert inspect.signature(cls.__init__) == inspect.signature(twin.__init__)


def test_fields_defaults_keywords_replace_and_frozen() -> None:
    p = model.Process(1, 2, 3, "/bin/sh", "sh", ("sh",), 7)
    q = model.Process(pid=1, ppid=2, uid=3, exe="/bin/sh", comm="sh", args=("sh",), cgroup_id=7)
    assert p == q and hash(p) == hash(q)
    assert (p.args_truncated, p.ancestors, p.vpid, p.session) == (False, (), None, None)
    assert dataclasses.replace(p, vpid=1).vpid == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.pid = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.Process(1, 2)  # type: ignore[call-arg]


def test_refuses_shapes_it_does_not_support() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        x: dict = dataclasses.field(default_factory=dict)

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        x: int

    for cls in (WithFactory, NotFrozen):
        with pytest.raises(TypeError):
            fast_init(cls)
