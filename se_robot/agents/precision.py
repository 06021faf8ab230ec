"""Mixed precision only where the hardware has it natively, confirmed by a short timing probe.

bf16 autocast halves the memory traffic of a conv net, but a CPU without bf16 instructions
(avx512_bf16 or AMX) emulates it, and DrQ-v2's update then ran about 10x slower than in fp32 on
the project's CPU. So ``amp: auto`` considers bf16 only on a device that reports native support (a
CUDA GPU of compute capability 8.0 or newer; a CPU whose flags list avx512_bf16 or amx_bf16), and
then keeps it only if a few timed forward/backward passes of the agent's own encoder are faster
than in fp32.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["cpu_has_native_bf16", "native_bf16", "pick_amp"]


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True if the CPU's flags list bf16 arithmetic (Linux; False where the flags cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively rather than by emulation."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def _elapsed(step: Callable[[], None], device: torch.device) -> float:
    """Wall seconds of one call of ``step``, waiting for a GPU's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def pick_amp(requested: str, device: torch.device, encoder: torch.nn.Module | None,
             pixel_shape: tuple[int, ...] | None, channels_last: bool = False, batch: int = 16,
             reps: int = 3) -> str:
    """Resolve ``amp`` (``auto``, ``none`` or ``bf16``) to ``none`` or ``bf16``.

    ``auto`` gives ``bf16`` only on native hardware and only if forward+backward of a copy of
    ``encoder`` on ``batch`` random images of ``pixel_shape`` (C, H, W) is at least 10% faster under
    bf16 autocast. Without a trained encoder there is no conv work for bf16 to speed up: ``none``.
    The probe draws from its own generator, so the caller's random streams are untouched.
    """
    if requested != "auto":
        return requested
    if encoder is None or pixel_shape is None or not native_bf16(device):
        return "none"
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    sample = torch.rand((batch, *pixel_shape), device=device, generator=gen) * 255.0
    if channels_last:
        sample = sample.contiguous(memory_format=torch.channels_last)
    probe = copy.deepcopy(encoder).requires_grad_(True)

    def run(amp: bool) -> Callable[[], None]:
        def step() -> None:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out = probe(sample)
            out.float().square().mean().backward()
        return step

    run(False)()   # first calls choose kernels and allocate: not timed
    run(True)()
    fp32 = bf16 = float("inf")
    for _ in range(reps):   # interleaved, and the best of each: a burst of other load hits both
        fp32 = min(fp32, _elapsed(run(False), device))
        bf16 = min(bf16, _elapsed(run(True), device))
    return "bf16" if bf16 < 0.9 * fp32 else "none"
