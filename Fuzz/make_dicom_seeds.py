#!/usr/bin/env python3
"""Writes the DICOM seed corpus of the fuzz target `dicom` (Fuzz/corpus/dicom/).

The repository keeps no DICOM files, only the compressed pixel streams in fixtures/dicom/ (the
tests wrap them with Tests/TestSupport/DICOMWriter.swift). This script wraps them the same way,
one small Part-10 file per transfer syntax xrlab decodes, plus the value-mapping variants
(MONOCHROME1, rescale, window, VOI LUT, padding). Python standard library only; deterministic.
Run: python3 Fuzz/make_dicom_seeds.py
"""
import json
import os
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures", "dicom")
OUT = os.path.join(ROOT, "Fuzz", "corpus", "dicom")

IMPLICIT, EXPLICIT, DEFLATED, BIG = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"
RLE, JPLL, JPLL_SV1 = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"
J2K_LOSSLESS, J2K, BASELINE = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.50"


def le16(v): return struct.pack("<H", v & 0xFFFF)
def le32(v): return struct.pack("<I", v & 0xFFFFFFFF)


def packbits(b):
    out = bytearray()
    for i in range(0, len(b), 128):
        chunk = b[i:i + 128]
        out.append(len(chunk) - 1)
        out += chunk
    if len(out) % 2:
        out.append(0x80)
    return bytes(out)


def dicom(syntax, rows=3, columns=4, bits_allocated=16, bits_stored=12, signed=False, photometric="MONOCHROME2",
          pixels=None, strings=(), padding=None, voi_lut=None, fragments=None, extra=()):
    big, explicit = syntax == BIG, syntax != IMPLICIT
    u16 = (lambda v: struct.pack(">H", v & 0xFFFF)) if big else le16
    u32 = (lambda v: struct.pack(">I", v & 0xFFFFFFFF)) if big else le32
    out = bytearray(128) + b"DICM"
    ts = syntax.encode() + (b"\0" if len(syntax) % 2 else b"")
    meta = le16(2) + le16(0x10) + b"UI" + le16(len(ts)) + ts
    out += le16(2) + le16(0) + b"UL" + le16(4) + le32(len(meta)) + meta
    meta_end = len(out)

    def element(g, e, vr, v):
        nonlocal out
        if len(v) % 2:
            v = v + (b"\0" if vr == "UI" else b" ")
        out += u16(g) + u16(e)
        if explicit:
            out += vr.encode()
            out += (b"\0\0" + u32(len(v))) if vr in ("OB", "OW", "SQ", "UN", "UT") else u16(len(v))
        else:
            out += u32(len(v))
        out += v

    for g, e, vr, s in sorted(extra):
        element(g, e, vr, s.encode())
    group = [(0x0002, "US", u16(1)), (0x0004, "CS", photometric.encode()), (0x0010, "US", u16(rows)),
             (0x0011, "US", u16(columns)), (0x0100, "US", u16(bits_allocated)), (0x0101, "US", u16(bits_stored)),
             (0x0102, "US", u16(bits_stored - 1)), (0x0103, "US", u16(1 if signed else 0))]
    if padding is not None:
        group.append((0x0120, "US", u16(padding)))
    if voi_lut is not None:
        first, lbits, data = voi_lut

        def el(e, vr, v):
            h = u16(0x0028) + u16(e)
            h += (vr.encode() + (b"\0\0" + u32(len(v)) if vr == "OW" else u16(len(v)))) if explicit else u32(len(v))
            return h + v
        item = el(0x3002, "US", u16(len(data)) + u16(first) + u16(lbits)) + el(0x3006, "OW", b"".join(u16(d) for d in data))
        group.append((0x3010, "SQ", u16(0xFFFE) + u16(0xE000) + u32(len(item)) + item))
    for e, vr, s in strings:
        group.append((e, vr, s.encode()))
    for e, vr, v in sorted(group):
        element(0x0028, e, vr, v)
    pixels = pixels if pixels is not None else [(i * 37) % (1 << bits_stored) for i in range(rows * columns)]
    mask = (1 << bits_allocated) - 1
    if fragments is not None or syntax == RLE:
        if fragments is None:
            bps = bits_allocated // 8
            segs = [packbits(bytes(((p & mask) >> (8 * (bps - 1 - s))) & 0xFF for p in pixels)) for s in range(bps)]
            frag, off = le32(bps), 64
            for s in range(15):
                frag += le32(off if s < bps else 0)
                if s < bps:
                    off += len(segs[s])
            fragments = [frag + b"".join(segs)]
        out += le16(0x7FE0) + le16(0x10) + b"OB\0\0" + le32(0xFFFFFFFF)
        out += le16(0xFFFE) + le16(0xE000) + le32(0)
        for f in fragments:
            f = f + b"\0" if len(f) % 2 else f
            out += le16(0xFFFE) + le16(0xE000) + le32(len(f)) + f
        out += le16(0xFFFE) + le16(0xE0DD) + le32(0)
    else:
        px = b"".join(u16(p & mask) if bits_allocated == 16 else bytes([p & mask]) for p in pixels)
        element(0x7FE0, 0x10, "OW" if bits_allocated == 16 else "OB", px)
    if syntax == DEFLATED:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return bytes(out[:meta_end]) + c.compress(bytes(out[meta_end:])) + c.flush()
    return bytes(out)


def main():
    os.makedirs(OUT, exist_ok=True)
    ident = [(0x0008, 0x0060, "CS", "DX"), (0x0010, 0x0010, "PN", "Doe^Jane"), (0x0010, 0x0020, "LO", "P123"),
             (0x0018, 0x5101, "CS", "PA"), (0x0020, 0x000D, "UI", "1.2.3.4")]
    seeds = {
        "explicit_le_16.dcm": dicom(EXPLICIT, extra=ident),
        "implicit_le_16.dcm": dicom(IMPLICIT),
        "explicit_be_16.dcm": dicom(BIG),
        "deflated_16.dcm": dicom(DEFLATED, extra=ident),
        "explicit_le_8.dcm": dicom(EXPLICIT, bits_allocated=8, bits_stored=8),
        "signed_16.dcm": dicom(EXPLICIT, signed=True, bits_stored=16, pixels=[-5, 0, 7, -300, 2, 3, 4, 5, 6, 7, 8, 9]),
        "mono1_rescale_window.dcm": dicom(EXPLICIT, photometric="MONOCHROME1", padding=0,
                                          strings=[(0x1050, "DS", "2048"), (0x1051, "DS", "4096"), (0x1052, "DS", "-1024"),
                                                   (0x1053, "DS", "1"), (0x1056, "CS", "SIGMOID")]),
        "voi_lut.dcm": dicom(EXPLICIT, voi_lut=(0, 8, [0, 10, 50, 200, 255])),
        "rle_16.dcm": dicom(RLE),
        "rle_8.dcm": dicom(RLE, bits_allocated=8, bits_stored=8),
    }
    cases = json.load(open(os.path.join(FIX, "cases.json")))
    for name, c in sorted(cases.items()):
        stream = open(os.path.join(FIX, c["file"]), "rb").read()
        if name.startswith("j2k"):
            syntax = J2K_LOSSLESS
        elif name.startswith("jpeg_baseline"):
            syntax = BASELINE
        else:
            syntax = JPLL_SV1 if "_p1_" in name else JPLL
        bits = c["bits"]
        seeds[name + ".dcm"] = dicom(syntax, rows=c["rows"], columns=c["columns"], bits_allocated=8 if bits <= 8 else 16,
                                     bits_stored=bits, signed=c.get("signed", False), fragments=[stream])
    for name, data in sorted(seeds.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} files to {OUT}")


if __name__ == "__main__":
    main()
