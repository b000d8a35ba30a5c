"""Training state as safetensors + JSON, never pickle: what `--resume` reads back from a run folder.

Why not Accelerate's `save_state`: it pickles the registered EMA, the RNG states and the optimisers, and
its `load_state` unpickles them (`torch.load(weights_only=False)`, `pickle.load`), so a crafted file in a
run folder would run code on `--resume`. Here each object's `state_dict()` is split into its tensors
(`<name>.safetensors`) and everything else (None, bools, numbers, strings, lists, tuples, dicts with str
or int keys) as tagged JSON in `state.json`. Loading opens only those files, by name, and builds nothing
but those types; any other file in the folder is never read.

The tags keep Python's types: AdamW's `betas` come back as a tuple, its per-parameter state keeps int
keys. `state.json` is `{"format": FORMAT, "objects": {name: node}}`, a node being a JSON scalar or a
one-key object: {"tensor": key}, {"list": [...]}, {"tuple": [...]}, {"dict": {str: node}} or
{"items": [[str or int, node], ...]}.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from infp.errors import InfpError

INDEX = "state.json"
FORMAT = "infp-train-state/1"
_NAME = re.compile(r"[a-z][a-z0-9_]*")  # an object's name is its file's name
# what Accelerate's save_state wrote: recognised by name (never opened) to explain the refusal
_ACCELERATE = ("*.pkl", "*.bin", "*.pt")
_SCALARS = (type(None), bool, int, float, str)


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, /) -> Any: ...


class RngState:
    """The global generators as one state dict: torch's CPU generator (a uint8 tensor), each CUDA
    device's, NumPy's and Python's, as Accelerate's save_state kept them, so dropout and anything else
    drawing from them continues on resume as it would have. (Batches come from per-step generators.)"""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict, /) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        if "cuda" in state and torch.cuda.is_available():  # the devices this machine has, of those saved
            for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)


# -- saving -------------------------------------------------------------------------------------------
def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` as a JSON node; its tensors go to `tensors`, named by their path in the state dict."""
    join = lambda k: f"{key}/{k}" if key else str(k)
    if isinstance(value, torch.Tensor):
        if key in tensors:
            raise ValueError(f"two tensors of a training state would both be stored as {key!r}")
        tensors[key] = value
        return {"tensor": key}
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        tag = "tuple" if isinstance(value, tuple) else "list"
        return {tag: [_encode(v, join(i), tensors) for i, v in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, join(k), tensors) for k, v in value.items()}}
    if isinstance(value, dict) and all(isinstance(k, (int, str)) and not isinstance(k, bool) for k in value):
        return {"items": [[k, _encode(v, join(k), tensors)] for k, v in value.items()]}
    raise TypeError(f"a training state cannot hold {type(value).__name__} (at {key or 'the top'})")


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two sharing memory (tied weights), as safetensors requires."""
    out, seen = {}, set()
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[k] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def save_state(folder: Path, objects: dict[str, Stateful]) -> None:
    """Write each object's state dict into `folder`: `<name>.safetensors` and its entry in `state.json`."""
    folder, index = Path(folder), {}
    for name, obj in objects.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"a state object's name must be a plain file name, not {name!r}")
        tensors: dict[str, torch.Tensor] = {}
        index[name] = _encode(obj.state_dict(), "", tensors)
        save_file(_storable(tensors), str(folder / f"{name}.safetensors"))
    (folder / INDEX).write_text(json.dumps({"format": FORMAT, "objects": index}) + "\n")


# -- loading ------------------------------------------------------------------------------------------
def _decode(node: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    """The value a JSON node stands for; anything that is not a node of the format is refused."""
    if isinstance(node, _SCALARS):
        return node
    if isinstance(node, dict) and len(node) == 1:
        (tag, body), = node.items()
        if tag == "tensor" and isinstance(body, str) and body in tensors:
            return tensors[body]
        if tag in ("list", "tuple") and isinstance(body, list):
            values = [_decode(v, tensors, where) for v in body]
            return tuple(values) if tag == "tuple" else values
        if tag == "dict" and isinstance(body, dict):
            return {k: _decode(v, tensors, where) for k, v in body.items()}
        if tag == "items" and isinstance(body, list) and all(_is_item(p) for p in body):
            return {k: _decode(v, tensors, where) for k, v in body}
    raise InfpError(f"not a valid training state (unexpected {json.dumps(node)[:80]})", where)


def _is_item(pair: Any) -> bool:
    """[key, node] with a str or int key (the optimisers' per-parameter state is keyed by index)."""
    return (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (int, str))
            and not isinstance(pair[0], bool))


def _read_index(folder: Path) -> dict:
    path = folder / INDEX
    if not path.is_file():
        if any(next(folder.glob(p), None) for p in _ACCELERATE):
            raise InfpError("this training state was saved by an older version of infp (Accelerate's pickle files), "
                            "which cannot be resumed safely: loading it could run code. Start a new run instead "
                            f"(stage 1: `--init-from {folder.parent / 'checkpoint'}` keeps the weights)", folder)
        raise InfpError(f"not a complete training state (no {INDEX})", folder)
    try:
        index = json.loads(path.read_text())
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise InfpError(f"unreadable training state: {e}", path) from e
    if not (isinstance(index, dict) and index.get("format") == FORMAT and isinstance(index.get("objects"), dict)):
        raise InfpError(f"not a training state of this format ({FORMAT})", path)
    return index["objects"]


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (OSError, SafetensorError, ValueError) as e:
        raise InfpError(f"unreadable training state: {e}", path) from e


def load_state(folder: Path, objects: dict[str, Stateful]) -> None:
    """Restore each object from `folder` as `save_state` wrote it. Every state is decoded before any
    object changes, and the saved objects must be exactly these: a state that does not fit is refused."""
    folder = Path(folder)
    index = _read_index(folder)
    if set(index) != set(objects):
        raise InfpError(f"the saved state holds {sorted(index)}, this run keeps {sorted(objects)}", folder)
    try:
        states = {n: _decode(index[n], _read_tensors(folder / f"{n}.safetensors"), folder) for n in objects}
    except RecursionError as e:
        raise InfpError("not a valid training state (nested too deep)", folder) from e
    for name, obj in objects.items():
        try:
            obj.load_state_dict(states[name])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            raise InfpError(f"the saved {name!r} does not fit this run: {e}", folder) from e
