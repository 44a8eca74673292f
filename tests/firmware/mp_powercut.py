# Sender sequence numbers over power cuts at every write operation, on
# MicroPython's own file systems (VfsFat, VfsLfs2) over a RAM block device
# that stops accepting writes after the k-th one.
# Usage: micropython -X heapsize=4M mp_powercut.py FS STORE [USES [torn]]
#   FS     fat | lfs2
#   STORE  two-slot (oscore.SequenceStore) | rename (the earlier store, a
#          control: one file replaced through .tmp and a rename)
#   USES   numbers used per boot (40)
#   torn   the refused write lands half-way (the first half of its bytes),
#          as on flash whose programming the cut interrupts
#
# For every k from 0 to the number of block writes an uncut run makes:
# format, mount, use sequence numbers from two stores in one folder (as.seq
# and rs.seq, in turn) until the device refuses write k + 1
# (the power cut: a number whose use() had not returned before the cut
# counts as not used), then boot again from what the blocks hold and go on;
# a second cut hits the second boot at another point, a third boot runs
# uncut.  Every boot must resume above every number used before it.  Prints
# "CUT k boot resume used-max" for a repeat, and one summary line
#   SUMMARY fs=.. store=.. points=N reused=R writes_per_record=W

import os
import sys

import oscore
import vfs
from mptest import check, done

_FP = "00112233aabbccdd"
_CHUNK = 4
_USES = int(sys.argv[3]) if len(sys.argv) > 3 else 40  # numbers per boot
TORN = len(sys.argv) > 4 and sys.argv[4] == "torn"
_EIO = -5


class Dev:
    """A RAM block device (the FAT and littlefs block protocols) with a write budget.

    Every writeblocks and every erase is one write operation; once budget
    of them happened, later ones are refused (EIO) and leave the blocks as
    they are, as a power cut would (with torn, the first refused write
    leaves half of its bytes).
    """

    def __init__(self, n, bs, data=None):
        self.n, self.bs = n, bs
        self.data = bytearray(data) if data else bytearray(n * bs)
        self.writes = 0
        self.budget = None
        self.cut = False
        self.torn = False

    def _allowed(self):
        if self.budget is not None and self.writes >= self.budget:
            self.cut = True
            return False
        self.writes += 1
        return True

    def readblocks(self, b, buf, off=0):
        a = b * self.bs + off
        buf[:] = memoryview(self.data)[a : a + len(buf)]

    def writeblocks(self, b, buf, off=None):
        if not self._allowed():
            if TORN and not self.torn:
                # the write the power cut stops lands half-way
                self.torn = True
                a = b * self.bs + (off or 0)
                self.data[a : a + len(buf) // 2] = buf[: len(buf) // 2]
            return _EIO
        a = b * self.bs + (off or 0)
        self.data[a : a + len(buf)] = buf
        return 0

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:  # erase (littlefs)
            if not self._allowed():
                return _EIO
            a = arg * self.bs
            self.data[a : a + self.bs] = b"\xff" * self.bs
        return 0


class RenameStore:
    """The earlier store: "<fingerprint> <limit>" written to .tmp, renamed over the file."""

    def __init__(self, path, chunk):
        self.path, self.chunk, self.limit, self.fingerprint, self.writes = path, chunk, 0, "", 0

    def start(self, fingerprint):
        self.fingerprint = fingerprint
        self.limit = 0
        try:
            with open(self.path) as f:
                parts = f.read().split()
        except OSError:
            parts = None
        if parts:
            if len(parts) != 2:
                raise OSError("corrupt")
            if parts[0] == fingerprint:
                self.limit = int(parts[1])
        return self.limit

    def use(self, seq):
        if seq >= self.limit:
            limit = seq + self.chunk
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{self.fingerprint} {limit}\n")
            os.rename(tmp, self.path)
            self.limit = limit
            self.writes += 1


if sys.argv[1] == "probe":
    print(" ".join(n for n in ("VfsFat", "VfsLfs2") if hasattr(vfs, n)))
    sys.exit(0)
FS, KIND = sys.argv[1], sys.argv[2]
CLS, NBLOCKS = (vfs.VfsFat, 128) if FS == "fat" else (vfs.VfsLfs2, 64)
STORE = oscore.SequenceStore if KIND == "two-slot" else RenameStore
PATHS = ("/m/state/as.seq", "/m/state/rs.seq")  # two stores in one folder, as on the board


def boot(dev, budget):
    """Mount, start both stores, use up to _USES numbers from each in turn.

    -> (resumes, used): per store, where it started (-1: cut before it
    started, None: it refused to start) and the numbers used.  budget:
    write operations allowed in this boot (None: no cut).
    """
    dev.budget = None if budget is None else dev.writes + budget
    vfs.mount(CLS(dev), "/m")
    used = ([], [])
    resumes = [-1, -1]
    try:
        try:
            os.stat("/m/state")
        except OSError:
            os.mkdir("/m/state")
        stores = [STORE(p, _CHUNK) for p in PATHS]
        for i, store in enumerate(stores):
            try:
                resumes[i] = store.start(_FP[i:] + _FP[:i])
            except oscore.OSCOREError:
                resumes[i] = None
        if None not in resumes:
            seqs = list(resumes)
            for _ in range(_USES):
                for i, store in enumerate(stores):
                    store.use(seqs[i])
                    if dev.cut:
                        raise OSError("power cut")
                    used[i].append(seqs[i])
                    seqs[i] += 1
    except OSError:
        if not dev.cut:
            raise
    finally:
        vfs.umount("/m")
    return resumes, used


def fresh():
    dev = Dev(NBLOCKS, 512)
    CLS.mkfs(dev)
    return dev


# An uncut boot: how many write operations there are to cut.
dev = fresh()
w0 = dev.writes
resumes, used = boot(dev, None)
points = dev.writes - w0
check(
    "uncut boot starts at 0 and uses every number",
    resumes == [0, 0] and used == (list(range(_USES)), list(range(_USES))),
)
print("WRITES", points)

reused = 0
refused = 0
for k in range(points + 1):
    dev = fresh()
    history = ([], [])  # every number used so far, per store, over the boots
    bad = None
    for n, budget in enumerate((k, (k * 7) % points + 1, None)):
        resumes, used = boot(dev, budget)
        if None in resumes:
            refused += 1
            bad = bad or f"boot {n} refused to start"
            break
        for i in (0, 1):
            seen = history[i]
            if seen and 0 <= resumes[i] <= max(seen):
                bad = bad or f"boot {n} {PATHS[i]} resumed at {resumes[i]}, {max(seen)} was used"
            if set(used[i]) & set(seen):
                bad = bad or f"boot {n} {PATHS[i]} used a number twice"
            seen += used[i]
        dev = Dev(NBLOCKS, 512, dev.data)  # power comes back: same blocks, new device
    if bad:
        reused += 1
        print("CUT", k, bad)

print(f"SUMMARY fs={FS} store={KIND} points={points + 1} reused={reused} refused={refused}")
if KIND == "two-slot":
    check("no number used twice over a cut at every write", reused == 0, f"{reused} cut(s)")
    check("a cut never leaves a store that refuses to start", refused == 0)
done()
