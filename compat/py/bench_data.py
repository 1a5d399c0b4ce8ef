"""Generates the benchmark data set of compat/bench.sh: bench_data.py DIR SCALE_MIB [SEED].

Everything is derived from SEED with Python's own PRNG, so the same arguments give the same
bytes on every machine. SCALE_MIB is the apparent size of the tree part (default 2048):

  DIR/tree/random/     incompressible files of many sizes (4 KiB .. 256 MiB)   ~45 %
  DIR/tree/text/       compressible text: a few large files and many small ones ~35 %
  DIR/tree/small/      many small files (100 B .. 32 KiB), 200 per directory     ~8 %
  DIR/tree/disk.img    a sparse disk image (512 MiB at full scale), ~25 % allocated
  DIR/image.raw        one image file of SCALE_MIB (random, text and zero extents)
  DIR/stream.bin       SCALE_MIB / 2 of mixed data, fed to `create -` on stdin

A file DIR/.complete holds the arguments once everything is written; a second call with the
same arguments returns at once.
"""
import os
import random
import sys

MIB = 1 << 20


def text_pool(rng, size):
    """Lines of pseudo-English: Zipf-weighted words from a seeded vocabulary."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    lweights = [12, 9, 8, 7.5, 7, 6.7, 6.3, 6, 5.9, 4.3, 4, 2.8, 2.8, 2.4, 2.4, 2.2, 2, 2, 1.9,
                1.5, 1, 0.8, 0.15, 0.15, 0.1, 0.07]
    vocab = ["".join(rng.choices(letters, lweights, k=rng.randint(1, 11))) for _ in range(20000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    cum = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    lines = []
    total = 0
    while total < size:
        words = rng.choices(vocab, cum_weights=cum, k=4096)
        pos = 0
        while pos < len(words):
            n = rng.randint(3, 16)
            line = (" ".join(words[pos:pos + n]) + "\n").encode()
            pos += n
            lines.append(line)
            total += len(line)
    return lines


def text_bytes(rng, lines, size):
    out = bytearray()
    while len(out) < size:
        out += b"".join(rng.choices(lines, k=2048))
    return bytes(out[:size])


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_random(path, rng, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(rng.randbytes(n))
            left -= n


def mixed_file(path, rng, lines, size, sparse_zeros):
    """Extents of 8..64 MiB: ~50 % random, ~30 % text, ~20 % zeros (holes if sparse_zeros)."""
    with open(path, "wb") as f:
        f.truncate(size)
        pos = 0
        while pos < size:
            n = min(size - pos, rng.randint(8, 64) * MIB)
            kind = rng.random()
            f.seek(pos)
            if kind < 0.5:
                left = n
                while left:
                    k = min(left, 16 * MIB)
                    f.write(rng.randbytes(k))
                    left -= k
            elif kind < 0.8:
                left = n
                while left:
                    k = min(left, 16 * MIB)
                    f.write(text_bytes(rng, lines, k))
                    left -= k
            elif not sparse_zeros:
                left = n
                while left:
                    k = min(left, 16 * MIB)
                    f.write(bytes(k))
                    left -= k
            pos += n


def main():
    root = sys.argv[1]
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    stamp = os.path.join(root, ".complete")
    want = "%d %d\n" % (scale, seed)
    if os.path.exists(stamp) and open(stamp).read() == want:
        return
    if os.path.exists(stamp):
        os.unlink(stamp)
    rng = random.Random(seed)
    lines = text_pool(rng, 16 * MIB)
    tree = os.path.join(root, "tree")
    budget = scale * MIB

    # incompressible files of many sizes
    rand_left = budget * 45 // 100
    sizes = []
    big = [256, 128, 64, 32, 16, 8, 4, 2, 1]  # MiB
    i = 0
    while rand_left > 0:
        if i < 40:
            s = rng.randint(4 << 10, 1 * MIB)  # many small-to-medium
        else:
            s = big[(i - 40) % len(big)] * MIB + rng.randint(0, MIB)
        s = min(s, rand_left)
        sizes.append(s)
        rand_left -= s
        i += 1
    for n, s in enumerate(sizes):
        write_random(os.path.join(tree, "random", "d%02d" % (n % 7), "r%04d.bin" % n), rng, s)

    # compressible text: a few large files and many medium ones
    text_left = budget * 35 // 100
    n = 0
    while text_left > 0:
        s = min(text_left, 24 * MIB if n < 8 else rng.randint(64 << 10, 4 * MIB))
        write(os.path.join(tree, "text", "t%02d" % (n % 10), "doc%05d.txt" % n), text_bytes(rng, lines, s))
        text_left -= s
        n += 1

    # many small files
    small_left = budget * 8 // 100
    n = 0
    while small_left > 0:
        s = min(small_left, int(2 ** rng.uniform(6.6, 15)))
        if rng.random() < 0.3:
            data = rng.randbytes(s)
        else:
            data = text_bytes(rng, lines, s)
        write(os.path.join(tree, "small", "s%03d" % (n // 200 % 1000), "g%02d" % (n // 40 % 5),
                           "f%06d" % n), data)
        small_left -= s
        n += 1

    # a sparse disk image: 1/4 allocated in 1..8 MiB extents, the rest holes
    img = os.path.join(tree, "disk.img")
    isize = max(budget // 4, 4 * MIB)
    with open(img, "wb") as f:
        f.truncate(isize)
        allocated = 0
        while allocated < isize // 4:
            n = min(rng.randint(1, 8) * MIB, isize // 4 - allocated)
            off = rng.randrange(0, isize - n) & ~(MIB - 1)
            f.seek(off)
            f.write(rng.randbytes(n) if rng.random() < 0.6 else text_bytes(rng, lines, n))
            allocated += n

    mixed_file(os.path.join(root, "image.raw"), rng, lines, budget, sparse_zeros=False)
    mixed_file(os.path.join(root, "stream.bin"), rng, lines, budget // 2, sparse_zeros=False)
    with open(stamp, "w") as f:
        f.write(want)


main()
