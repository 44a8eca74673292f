"""Plain text and path parameters converted without pydantic, for a fast start.

Typer 0.29 converts every parameter value that is not a boolean flag with a pydantic
``TypeAdapter``, built on first use; importing pydantic costs more than the rest of
``keybound token inspect``. For the parameters most commands have, a ``str`` or a
``Path`` (or a list of them) without a parser, choices or path type, and a flag left
unset (typer's ``--install-completion``), the value click parsed needs no such adapter:
:func:`use_plain_conversions` gives those parameters a conversion that returns the text
as it is, or the path through typer's own path checks (``coerce_cli_path``, which
pydantic's adapter calls too). Anything else, and any value
that is not text, still goes through typer's adapter.

The conversion is typer's internal interface (``typer._coercion.RuntimeParam``, the
``_runtime_param`` slot of a parameter); with a typer that lacks it, nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_origin

__all__ = ["use_plain_conversions"]

Leaf = Callable[[Any, Any, Any], Any]


def _leaf_kind(annotation: Any) -> type | None:
    if annotation in (str, Path, bool):
        return annotation  # type: ignore[no-any-return]
    return None


def _plain_kind(descriptor: Any) -> tuple[type, bool] | None:
    """(leaf type, is a list) of a parameter typer would convert with pydantic, or None."""
    info = descriptor.parameter_info
    if info.parser is not None or descriptor.file_annotation is not None:
        return None
    if getattr(info, "path_type", None) is not None or descriptor.choices is not None:
        return None
    annotation = descriptor.annotation
    if get_origin(annotation) is list:
        args = get_args(annotation)
        leaf = _leaf_kind(args[0]) if len(args) == 1 else None
        return None if leaf is None else (leaf, True)
    leaf = _leaf_kind(annotation)
    return None if leaf is None else (leaf, False)


def use_plain_conversions(command: Any) -> None:
    """Give the plain parameters of ``command`` and its subcommands their plain conversion."""
    try:
        from typer._click import Context  # noqa: PLC0415 - only where the interface exists
        from typer._coercion import (  # noqa: PLC0415
            RuntimeParam,
            build_runtime_param,
            resolve_type_descriptor,
        )
        from typer._param_types import coerce_cli_path  # noqa: PLC0415
        from typer.core import _TyperParameter  # noqa: PLC0415
    except ImportError:  # another typer: it converts as it always does
        return

    class PlainRuntimeParam(RuntimeParam):
        """``str`` or ``Path`` values (or lists of them) as typer's adapter would give them."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            annotation: Any = self.annotation
            if get_origin(annotation) is list:
                (leaf,) = get_args(annotation)
                items = value if isinstance(value, list | tuple) else [value]
                return [self._leaf(leaf, item, param, ctx) for item in items]
            return self._leaf(annotation, value, param, ctx)

        def _leaf(self, leaf: type, value: Any, param: Any, ctx: Any) -> Any:
            if (leaf is str and isinstance(value, str)) or (leaf is bool and value is None):
                return value
            if leaf is Path and isinstance(value, str | Path):
                path = value if isinstance(value, Path) else Path(value)
                return coerce_cli_path(
                    path, self.parameter_info, path_type=Path, param=param, ctx=ctx
                )
            typed = build_runtime_param(resolve_type_descriptor(leaf, self.parameter_info))
            return typed._coerce_value(value, param=param, ctx=ctx)

    def visit(node: Any) -> None:
        params = list(getattr(node, "params", ()))
        if hasattr(node, "get_help_option") and getattr(node, "_help_option", False) is None:
            # --help is made on first use, with the option names of the context; the
            # commands set none, so a context of the command alone gives the same names
            help_option = node.get_help_option(Context(node, **node.context_settings))
            params += [] if help_option is None else [help_option]
        for param in params:
            descriptor = getattr(param, "type_descriptor", None)
            if (
                isinstance(param, _TyperParameter)
                and descriptor is not None
                and getattr(param, "_runtime_param", False) is None
                and _plain_kind(descriptor) is not None
            ):
                param._runtime_param = PlainRuntimeParam(
                    parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
                )
        for sub in getattr(node, "commands", {}).values():
            visit(sub)

    visit(command)
