"""The shared-memory snapshot across real processes: reads are never torn, attach never unlinks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from streamlearn.serving.snapshot import SharedSnapshot

N = 200_000  # large enough that a copy takes long enough for a concurrent writer to interleave


def test_concurrent_reads_see_whole_versions_only() -> None:
    snap = SharedSnapshot.create(N)
    writer_code = textwrap.dedent(
        f"""
        import numpy as np, time
        from streamlearn.serving.snapshot import SharedSnapshot
        snap = SharedSnapshot.attach({snap.name!r})
        v, end = 0, time.monotonic() + 1.5  # long enough to overlap the reader on a slow machine
        while time.monotonic() < end:
            v += 1
            snap.publish(np.full({N}, v, dtype=np.float32), version=v)
        print(v)
        snap.close()
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", writer_code], stdout=subprocess.PIPE, text=True)
    out = np.empty(N, dtype=np.float32)
    versions = []
    try:
        while writer.poll() is None or not versions:
            v = snap.read(out)
            if v < 0:
                continue
            # a torn read would mix two versions' values
            assert out.min() == out.max() == v, (v, out.min(), out.max())
            versions.append(v)
    finally:
        last = int(writer.communicate(timeout=60)[0])
    assert writer.returncode == 0
    assert versions == sorted(versions)  # never goes back
    assert len(set(versions)) > 1, "the reader saw only one version; the test proved nothing"
    assert snap.read(out) == last and (out == last).all()
    snap.close()


def test_a_reader_process_exiting_leaves_the_block_alive() -> None:
    snap = SharedSnapshot.create(10)
    snap.publish(np.arange(10, dtype=np.float32), version=3)
    snap.publish_text({"labels": ["a", "b"]}, b"streamlearn_x 1\n")
    snap.set_ready(True)
    code = f"""
from streamlearn.serving.snapshot import SharedSnapshot
import numpy as np
s = SharedSnapshot.attach({snap.name!r})
out = np.empty(10, dtype=np.float32)
print(s.read(out), int(out.sum()), s.ready, s.read_text()[0]["labels"])
s.close()
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["3", "45", "True", "['a',", "'b']"]
    # Before the fix the child's resource tracker unlinked the block when the child exited.
    again = SharedSnapshot.attach(snap.name)
    assert again.version == 3
    again.close()
    snap.close()
