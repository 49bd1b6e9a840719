#!/usr/bin/env python3
"""make_regressions.py EFLA OUTDIR: writes crafted checkpoints that once crashed, or made
huge allocations in, efla's loader (issue 16), plus HDF5 features efla never writes, made
from valid checkpoints. Each must now be refused with a clear error; tests/c/
test_h5_regressions.c replays every file in OUTDIR (crafted here or saved by the fuzzer).
Crafted bytes get their HDF5 checksums recomputed (hdf5_bytes.py), so they reach the code
behind HDF5's checksum tests, as a deliberate attacker's would."""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hdf5_bytes as h5b  # noqa: E402

UNDEF = b'\xff' * 8


def make(efla, path, lua_contents):
    script = ("local efla = require 'efla'\nlocal ck = require 'efla.checkpoint'\n"
              "ck.save(arg[1], %s)\n" % lua_contents)
    with tempfile.NamedTemporaryFile('w', suffix='.lua', delete=False) as f:
        f.write(script)
    try:
        subprocess.run([efla, f.name, path], check=True)
    finally:
        os.unlink(f.name)
    return bytearray(open(path, 'rb').read())


def first(buf, mtype, chunk=None):
    for k, t, at, size in h5b.messages(bytes(buf)):
        if t == mtype and (chunk is None or k == chunk):
            return at, size
    raise SystemExit('make_regressions: message type %d not found' % mtype)


def save(out, name, buf):
    h5b.fix_checksums(buf)
    with open(os.path.join(out, name), 'wb') as f:
        f.write(buf)
    print('wrote %s (%d bytes)' % (name, len(buf)))


def main():
    efla, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp()
    try:
        empty = make(efla, os.path.join(tmp, 'empty.h5'), '{}')
        # finding 1: the root's attribute info claims dense storage (fractal heap and name
        # B-tree at real addresses); HDF5 1.10.8's H5Aexists then reads through NULL. The
        # 640-byte file differs from a valid one in the two addresses and the checksum.
        b = bytearray(empty)
        at, _ = first(b, 0x15)
        b[at + 2:at + 10] = struct.pack('<Q', 48)
        b[at + 10:at + 18] = struct.pack('<Q', 48)
        save(out, 'dense_attributes.h5', b)
        b = bytearray(empty)
        at, _ = first(b, 0x15)
        b[at + 2:at + 6] = b'\x30\x00\x00\x00'   # four bytes: the fheap address only
        save(out, 'dense_attributes_4bytes.h5', b)
        # the same for links
        b = bytearray(empty)
        at, _ = first(b, 0x02)
        b[at + 2:at + 10] = struct.pack('<Q', 48)
        save(out, 'dense_links.h5', b)

        # finding 3: a dataset declaring 2^28 elements with nothing stored behind them
        small = make(efla, os.path.join(tmp, 'small.h5'), '{model = {w = efla.ones({4})}}')
        b = bytearray(small)
        at, size = first(b, 0x01, None)   # the dataset's dataspace (the only one in a header)
        dims = b[at + 1]
        for i in range(dims * (2 if b[at + 2] & 1 else 1)):
            b[at + 4 + 8 * i:at + 12 + 8 * i] = struct.pack('<Q', 1 << 28)
        save(out, 'huge_dataset_no_data.h5', b)
        at2, _ = first(b, 0x08)
        b[at2 + 10:at2 + 18] = struct.pack('<Q', 4 << 28)   # and a storage size to match
        save(out, 'huge_dataset_past_eof.h5', b)

        # finding 3: a long string (stored as a dataset) whose type claims ~700 MB
        longs = make(efla, os.path.join(tmp, 'long.h5'), "{meta = {note = string.rep('x', 40000)}}")
        b = bytearray(longs)
        for k, t, at, size in h5b.messages(bytes(b)):
            if t == 0x03 and (b[at] & 15) == 3:
                b[at + 4:at + 8] = struct.pack('<I', 700 << 20)
                break
        save(out, 'huge_long_string.h5', b)

        # things efla never writes, made with h5py where it is installed
        try:
            import h5py
        except ImportError:
            print('make_regressions: no h5py; skipping the h5py-made files')
            return
        base = os.path.join(tmp, 'base.h5')
        make(efla, base, '{model = {w = efla.ones({2, 3})}, step = 1}')

        def variant(name, change):
            p = os.path.join(out, name)
            shutil.copy(base, p)
            with h5py.File(p, 'r+') as f:
                change(f)
            print('wrote %s (%d bytes)' % (name, os.path.getsize(p)))

        variant('soft_link.h5', lambda f: f['model'].__setitem__('v', h5py.SoftLink('/model/w')))
        variant('external_link.h5', lambda f: f['model'].__setitem__('v', h5py.ExternalLink('/etc/passwd', '/')))
        variant('chunked_gzip.h5', lambda f: f.create_dataset('model/v', data=list(range(100)), chunks=(10,), compression='gzip'))
        variant('vlen_string_attr.h5', lambda f: f.attrs.__setitem__('config_json', '{}'))

        def dense(f):
            g = f.create_group('many', track_order=False)
            for i in range(40):
                g.attrs['a%d' % i] = i
        variant('dense_attributes_h5py.h5', dense)
        p = os.path.join(out, 'old_format.h5')
        with h5py.File(p, 'w', libver='earliest') as f:
            f.attrs['format_version'] = 1.0
            f['model/w'] = [1.0, 2.0]
        print('wrote old_format.h5 (%d bytes)' % os.path.getsize(p))
    finally:
        shutil.rmtree(tmp)


if __name__ == '__main__':
    main()
