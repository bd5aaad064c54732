"""Python config files: `path.py[:arg]` -> get_config(arg) -> a locked ConfigDict.

Overrides come as `--config.a.b=value` pairs; values are parsed as Python literals where
they can be (`3`, `0.1`, `True`, `['a', 'b']`) and kept as strings otherwise, then set
through ConfigDict's type checks, so a typo or a wrong type is an error naming the field.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys

import ml_collections

from bert_jax.errors import UserError


def _where(error: Exception, path: str) -> str:
    """'FILE:LINE: ' of the innermost frame of `error` in the config file, if any."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{path}:{error.lineno}: "
    tb, line = error.__traceback__, None
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}:{line}: " if line else ""


def load(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"--config={spec!r}: file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location("_bert_jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    # A config may import its neighbours (configs/pretrain/*.py import pretrain_base).
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        module_spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a config file is user code: any error is theirs
        raise UserError(f"--config={spec!r}: {_where(e, path)}{type(e).__name__}: {e}") from None
    finally:
        sys.path.pop(0)
    if not hasattr(module, "get_config"):
        raise UserError(f"--config={spec!r}: {path} defines no get_config()")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except ValueError as e:  # get_config's own argument errors
        raise UserError(f"--config={spec!r}: {e}") from None
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserError(
            f"--config={spec!r}: get_config raised {_where(e, path)}{type(e).__name__}: {e}"
        ) from None
    config = ml_collections.ConfigDict(config)
    config.lock()
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq:
            raise UserError(f"override {item!r}: expected --config.FIELD=VALUE")
        set_field(config, key.removeprefix("--").removeprefix("config."), raw)
    return config


def set_field(config: ml_collections.ConfigDict, dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for i, name in enumerate(parents):
        if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
            raise UserError(f"config has no section {'.'.join(parents[: i + 1])!r}")
        node = node[name]
    if leaf not in node:
        raise UserError(f"config has no field {dotted!r}; fields here: {', '.join(sorted(node))}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    current = node[leaf]
    if isinstance(current, str) and not isinstance(value, str):
        value = raw
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise UserError(f"--config.{dotted}={raw!r}: {e}") from None


def to_dict(config) -> dict:
    return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
