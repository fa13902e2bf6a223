"""Checkpoints of a training stage: everything a resumed stage needs to go on as if it had
never stopped.

:func:`ncf.training.train` given a checkpoint path writes, at the end of every epoch, the
model's weights, the optimizer's ``state_dict()``, the learning-rate scheduler's, the early
stopping counters and the best weights so far, the warm-up step counter, the history, and the
state of every random generator the stage draws from: the epoch builder's (numpy and torch,
host or device) and torch's global generators (the MLP's dropout masks take their seeds from
them). At the end of the stage it writes the final weights and the global generators' state,
so that the next stage of a resumed pipeline starts from the same state too.

A checkpoint is one ``.npz`` file of arrays plus one JSON document (no pickle: it is read
with ``allow_pickle=False``), written under a temporary name and renamed into place, so a
killed run leaves the previous epoch's checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncf.errors import DataError
from ncf.runs import atomic_savez, read_npz

#: Bump when the layout of a checkpoint changes (older ones are then refused, in one line).
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------- nested state <-> npz
def pack(tree: Any, arrays: dict[str, np.ndarray], prefix: str = "t") -> Any:
    """A JSON-able copy of ``tree`` whose tensors and arrays are moved into ``arrays``.

    Tensors become ``{"__tensor__": key}``; tuples and dicts with non-string keys (an
    optimizer's state is keyed by parameter index) are tagged so that :func:`unpack` gives
    back exactly what was packed.
    """
    if isinstance(tree, torch.Tensor):
        key = f"{prefix}.{len(arrays)}"
        arrays[key] = tree.detach().cpu().numpy()
        return {"__tensor__": key}
    if isinstance(tree, np.ndarray):
        key = f"{prefix}.{len(arrays)}"
        arrays[key] = tree
        return {"__array__": key}
    if isinstance(tree, Mapping):
        if all(isinstance(k, str) for k in tree):
            return {"__dict__": {k: pack(v, arrays, prefix) for k, v in tree.items()}}
        return {"__items__": [[pack(k, arrays, prefix), pack(v, arrays, prefix)]
                              for k, v in tree.items()]}
    if isinstance(tree, tuple):
        return {"__tuple__": [pack(v, arrays, prefix) for v in tree]}
    if isinstance(tree, list):
        return [pack(v, arrays, prefix) for v in tree]
    if isinstance(tree, np.generic):
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store a {type(tree).__name__} in a checkpoint")


def unpack(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The inverse of :func:`pack`."""
    if isinstance(tree, list):
        return [unpack(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return torch.from_numpy(np.array(arrays[tree["__tensor__"]]))
    if "__array__" in tree:
        return np.array(arrays[tree["__array__"]])
    if "__dict__" in tree:
        return {k: unpack(v, arrays) for k, v in tree["__dict__"].items()}
    if "__items__" in tree:
        return {unpack(k, arrays): unpack(v, arrays) for k, v in tree["__items__"]}
    if "__tuple__" in tree:
        return tuple(unpack(v, arrays) for v in tree["__tuple__"])
    raise ValueError(f"unknown entry {sorted(tree)!r}")


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (nested dicts, lists, numbers, strings, tensors) to ``path``, atomically."""
    arrays: dict[str, np.ndarray] = {}
    doc = {"version": CHECKPOINT_VERSION, "state": pack(dict(state), arrays)}
    text = json.dumps(doc, allow_nan=True).encode()
    arrays["__meta__"] = np.frombuffer(text, dtype=np.uint8)
    return atomic_savez(path, arrays)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The state saved in ``path``, or ``None`` when there is no such file.

    Raises:
        DataError: naming the file, when it is damaged or of another version.
    """
    path = Path(path)
    if not path.exists():
        return None
    hint = "; delete it to restart this stage"
    arrays = read_npz(path, "checkpoint", hint)
    try:
        doc = json.loads(bytes(arrays.pop("__meta__")).decode())
    except Exception as exc:  # no meta entry, or not JSON text: a damaged file
        raise DataError(f"unreadable checkpoint ({type(exc).__name__}){hint}",
                        path=path) from None
    if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"a checkpoint of another version ({doc.get('version')!r}, this ncf "
                        f"reads {CHECKPOINT_VERSION})" if isinstance(doc, dict) else
                        "not a checkpoint of ncf", path=path)
    try:
        state = unpack(doc["state"], arrays)
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"not a checkpoint of ncf ({type(exc).__name__}: {exc})",
                        path=path) from None
    if not isinstance(state, dict):
        raise DataError("not a checkpoint of ncf", path=path)
    return state


# --------------------------------------------------------------------------- generators
def _bytes(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def generator_state(gen: torch.Generator) -> str:
    """A torch generator's state (a CUDA generator's too) as text."""
    return _bytes(gen.get_state())


def set_generator_state(gen: torch.Generator, text: str) -> None:
    gen.set_state(_tensor(text))


def numpy_state(rng: np.random.Generator | None) -> Any:
    """A numpy generator's state (plain JSON: its integers are exact in JSON)."""
    return None if rng is None else rng.bit_generator.state


def set_numpy_state(rng: np.random.Generator | None, state: Any) -> None:
    if rng is not None:
        rng.bit_generator.state = state


def global_rng_state(device: torch.device) -> dict[str, str]:
    """torch's global generators: the CPU's, and ``device``'s when it is a GPU."""
    out = {"cpu": _bytes(torch.get_rng_state())}
    if device.type == "cuda":
        out["cuda"] = _bytes(torch.cuda.get_rng_state(device))
    return out


def set_global_rng_state(state: Mapping[str, str], device: torch.device) -> None:
    torch.set_rng_state(_tensor(state["cpu"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(_tensor(state["cuda"]), device)


def same_config(saved: Any, current: Mapping[str, Any]) -> bool:
    """Whether a stored configuration equals ``current`` once both went through JSON
    (tuples become lists; ``NaN`` equals ``NaN``)."""
    def norm(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return "nan"
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [norm(v) for v in x]
        return x
    return bool(norm(json.loads(json.dumps(saved))) == norm(json.loads(json.dumps(current))))
