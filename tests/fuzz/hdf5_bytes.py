"""hdf5_bytes.py: just enough of HDF5's on-disk format (superblock v2/v3, version 2 object
headers) to find a message in a file efla wrote, change its bytes in place and recompute the
checksums, so that a crafted file passes HDF5's own checksum tests. Used by
make_regressions.py; the C side of the same checksum is core/h5_check.c."""
import struct

MASK = 0xFFFFFFFF


def _rot(x, k):
    return ((x << k) | (x >> (32 - k))) & MASK


def lookup3(data, initval=0):
    """Bob Jenkins' lookup3 hashlittle over bytes: HDF5's H5_checksum_metadata."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & MASK
    i = 0
    while n > 12:
        a = (a + struct.unpack_from('<I', data, i)[0]) & MASK
        b = (b + struct.unpack_from('<I', data, i + 4)[0]) & MASK
        c = (c + struct.unpack_from('<I', data, i + 8)[0]) & MASK
        a = (a - c) & MASK; a ^= _rot(c, 4); c = (c + b) & MASK
        b = (b - a) & MASK; b ^= _rot(a, 6); a = (a + c) & MASK
        c = (c - b) & MASK; c ^= _rot(b, 8); b = (b + a) & MASK
        a = (a - c) & MASK; a ^= _rot(c, 16); c = (c + b) & MASK
        b = (b - a) & MASK; b ^= _rot(a, 19); a = (a + c) & MASK
        c = (c - b) & MASK; c ^= _rot(b, 4); b = (b + a) & MASK
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = data[i:i + n] + bytes(12 - n)
    a = (a + struct.unpack_from('<I', tail, 0)[0]) & MASK
    b = (b + struct.unpack_from('<I', tail, 4)[0]) & MASK
    c = (c + struct.unpack_from('<I', tail, 8)[0]) & MASK
    c ^= b; c = (c - _rot(b, 14)) & MASK
    a ^= c; a = (a - _rot(c, 11)) & MASK
    b ^= a; b = (b - _rot(a, 25)) & MASK
    c ^= b; c = (c - _rot(b, 16)) & MASK
    a ^= c; a = (a - _rot(c, 4)) & MASK
    b ^= a; b = (b - _rot(a, 14)) & MASK
    c ^= b; c = (c - _rot(b, 24)) & MASK
    return c


def root_address(buf):
    return struct.unpack_from('<Q', buf, 36)[0]


def chunks(buf):
    """Every object header chunk in the file: (start, end of messages) pairs; the checksum
    follows at 'end'. Found by signature, which is enough for files efla wrote."""
    out = []
    pos = buf.find(b'OHDR')
    while pos >= 0:
        flags = buf[pos + 5]
        at = pos + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        w = 1 << (flags & 3)
        size = int.from_bytes(buf[at:at + w], 'little')
        out.append((pos, at + w, at + w + size))
        pos = buf.find(b'OHDR', pos + 4)
    pos = buf.find(b'OCHK')
    while pos >= 0:
        # a continuation chunk's length is in the message that points at it
        for cpos in range(0, len(buf) - 20):
            if buf[cpos] == 0x10 and buf[cpos + 1:cpos + 4] == b'\x10\x00\x00' and \
               struct.unpack_from('<Q', buf, cpos + 4)[0] == pos:
                length = struct.unpack_from('<Q', buf, cpos + 12)[0]
                out.append((pos, pos + 4, pos + length - 4))
                break
        pos = buf.find(b'OCHK', pos + 4)
    return out


def messages(buf):
    """(chunk index, message type, data offset, data size) for every message."""
    out = []
    for k, (start, first, end) in enumerate(chunks(buf)):
        at = first
        while end - at >= 4:
            mtype, size = buf[at], struct.unpack_from('<H', buf, at + 1)[0]
            out.append((k, mtype, at + 4, size))
            at += 4 + size
    return out


def fix_checksums(buf):
    """Recomputes the superblock's and every chunk's checksum in place (buf: bytearray)."""
    struct.pack_into('<I', buf, 44, lookup3(bytes(buf[0:44])))
    for start, _, end in chunks(buf):
        struct.pack_into('<I', buf, end, lookup3(bytes(buf[start:end])))
