"""Frozen dataclass records built without their generated ``__init__``.

A frozen dataclass's ``__init__`` assigns each field through ``object.__setattr__``
(its own ``__setattr__`` refuses), one call per field. The records the hot paths make
on every token (the decoded claims' layers, the verified token, the OSCORE input
material, the derived context's parameters, the ``/authz-info`` outcome) have had
every field checked by the time they are made, so :func:`frozen_record` fills the
instance's dictionary in one step instead. The cost is memory: such an instance has
a dictionary of its own, about 200 bytes more than CPython's shared-key layout an
``__init__`` gives, which matters only for records that are kept.
"""

from __future__ import annotations

from typing import Any, TypeVar

_Frozen = TypeVar("_Frozen")


def frozen_record(cls: type[_Frozen], /, **fields: Any) -> _Frozen:
    """An instance of the frozen dataclass ``cls`` holding ``fields``: every field
    given, each in the form ``__init__`` and ``__post_init__`` would leave it, whose
    checks the caller has made. Nothing is checked or converted here, and
    ``__post_init__`` does not run."""
    record: _Frozen = object.__new__(cls)
    record.__dict__.update(fields)
    return record


__all__ = ["frozen_record"]
