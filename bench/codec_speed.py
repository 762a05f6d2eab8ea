"""Codec speeds of pydicom's plugins on a 512x512 12-bit CT-like frame, and whether two threads
decode/encode faster than one (the GIL question behind ``dicomnet.pixels.pool``).

    python bench/codec_speed.py [--frames 20]

Prints, per codec and plugin: compression ratio, CPU milliseconds per frame (process time, so
a busy machine changes it little), and the thread scaling: CPU seconds used per wall second
with two threads divided by the same with one (about 2 when the codec releases the GIL and
both cores are free, about 1 when it holds it). Each two-thread run happens in a child process,
because pylibjpeg-openjpeg's encoder crashes (SIGSEGV) when two threads encode at once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, threading, time, warnings
warnings.simplefilter("ignore")
import numpy as np
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
syntax, plugin, mode, threads, count, extra = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
rng = np.random.default_rng(0)
y, x = np.mgrid[0:512, 0:512]
image = np.clip((np.sin(x / 23) + np.cos(y / 31)) * 900 + 2048 + rng.normal(0, 30, (512, 512)), 0, 4095).astype(np.uint16)
kw = dict(rows=512, columns=512, samples_per_pixel=1, bits_allocated=16, bits_stored=12,
          pixel_representation=0, photometric_interpretation="MONOCHROME2", number_of_frames=1)
encoder_syntax = "1.2.840.10008.1.2.4.90" if syntax == "1.2.840.10008.1.2.4.91" and not extra else syntax
codestream = get_encoder(encoder_syntax).encode(image, **kw, **extra)
if mode == "encode":
    enc = get_encoder(encoder_syntax)
    work = lambda: enc.encode(image, encoding_plugin=plugin, **kw, **extra)
else:
    dec, src = get_decoder(syntax), encapsulate([codestream])
    work = lambda: dec.as_array(src, index=0, decoding_plugin=plugin, **kw)
work()
def loop():
    for _ in range(count):
        work()
c0, t0 = time.process_time(), time.perf_counter()
ts = [threading.Thread(target=loop) for _ in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
print(json.dumps({"cpu_ms": 1000 * cpu / (threads * count), "cpu_per_wall": cpu / wall,
                  "ratio": image.nbytes / len(codestream)}))
"""

CASES = [
    ("RLE Lossless", "1.2.840.10008.1.2.5", {}),
    ("JPEG-LS Lossless", "1.2.840.10008.1.2.4.80", {}),
    ("JPEG-LS Near-Lossless NEAR=2", "1.2.840.10008.1.2.4.81", {"jls_error": 2}),
    ("JPEG 2000 Lossless", "1.2.840.10008.1.2.4.90", {}),
    ("JPEG 2000 ratio 10", "1.2.840.10008.1.2.4.91", {"j2k_cr": [10]}),
]


def run(syntax: str, plugin: str, mode: str, threads: int, count: int, extra: dict[str, object]) -> dict[str, float] | str:  # fmt: skip
    argv = [sys.executable, "-c", CHILD, syntax, plugin, mode, str(threads), str(count)]
    done = subprocess.run(
        [*argv, json.dumps(extra)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"crashed (exit {done.returncode})"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.pixels.encoders.base import get_encoder

    print("| codec | op | plugin | ratio | CPU ms/frame | 2 threads vs 1 (CPU/wall) |")
    print("|---|---|---|---|---|---|")
    for name, syntax, extra in CASES:
        for mode, coder in (("encode", get_encoder(syntax)), ("decode", get_decoder(syntax))):
            for plugin in coder.available_plugins:
                one = run(syntax, plugin, mode, 1, args.frames, extra)
                two = run(syntax, plugin, mode, 2, args.frames, extra)
                if isinstance(one, str):
                    print(f"| {name} | {mode} | {plugin} | | {one} | |")
                    continue
                scale = two if isinstance(two, str) else f"{two['cpu_per_wall'] / one['cpu_per_wall']:.2f}"  # fmt: skip
                print(
                    f"| {name} | {mode} | {plugin} | {one['ratio']:.2f} | "
                    f"{one['cpu_ms']:.1f} | {scale} |"
                )


if __name__ == "__main__":
    main()
