"""The page's one WebAssembly function, assembled here byte by byte (no toolchain needed):

    matvec(w, x, out, rows, cols)    out[r] += sum_c w[r * cols + c] * x[c],  r < rows

with w, x and out byte offsets of fp32 arrays in the memory the page gives it (imported as env.mem), and
cols a multiple of 8. Two 4-lane SIMD sums (f32x4) per row: the JIT runs plain JavaScript's loop one
multiply at a time, this four to eight at once. In WebAssembly text:

    (func (export "matvec") (param $w i32) (param $x i32) (param $out i32) (param $rows i32) (param $cols i32)
      (local $end i32) (local $c i32) (local $a v128) (local $b v128)
      (local.set $cols (i32.shl (local.get $cols) (i32.const 2)))              ;; bytes per row
      (local.set $end (i32.add (local.get $out) (i32.shl (local.get $rows) (i32.const 2))))
      (block $done (loop $row
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $a (v128.const 0)) (local.set $b (v128.const 0)) (local.set $c (i32.const 0))
        (block $cols_done (loop $col
          (br_if $cols_done (i32.ge_u (local.get $c) (local.get $cols)))
          (local.set $a (f32x4.add (local.get $a) (f32x4.mul (v128.load (w + c)) (v128.load (x + c)))))
          (local.set $b (f32x4.add (local.get $b)
                                   (f32x4.mul (v128.load offset=16 (w + c)) (v128.load offset=16 (x + c)))))
          (local.set $c (i32.add (local.get $c) (i32.const 32))) (br $col)))
        (local.set $a (f32x4.add (local.get $a) (local.get $b)))
        (f32.store (local.get $out) (f32.add (f32.load (local.get $out))
          (f32.add (f32.add (lane 0 $a) (lane 1 $a)) (f32.add (lane 2 $a) (lane 3 $a)))))
        (local.set $w (i32.add (local.get $w) (local.get $cols)))
        (local.set $out (i32.add (local.get $out) (i32.const 4))) (br $row))))
"""

from __future__ import annotations

I32, V128, EMPTY = 0x7F, 0x7B, 0x40
W, X, OUT, ROWS, COLS, END, C, A, B = range(9)  # parameters, then locals


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _section(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _uleb(len(body)) + body


def _vec(items: list[bytes]) -> bytes:
    return _uleb(len(items)) + b"".join(items)


def _name(s: str) -> bytes:
    return _uleb(len(s)) + s.encode()


def get(i: int) -> bytes:
    return bytes([0x20, i])


def put(i: int) -> bytes:
    return bytes([0x21, i])


def i32(n: int) -> bytes:
    return bytes([0x41]) + _uleb(n)  # (small non-negative constants: unsigned and signed LEB agree below 64)


def simd(op: int, *imm: int) -> bytes:
    return bytes([0xFD]) + _uleb(op) + bytes(imm)


ADD, SHL, GE_U = b"\x6a", b"\x74", b"\x4f"
BLOCK, LOOP, END_, BR, BR_IF = b"\x02\x40", b"\x03\x40", b"\x0b", b"\x0c", b"\x0d"
F32_LOAD, F32_STORE, F32_ADD = b"\x2a\x02\x00", b"\x38\x02\x00", b"\x92"
ZERO = simd(0x0C, *([0] * 16))  # v128.const 0


def load(base: int, offset: int) -> bytes:
    return get(base) + get(C) + ADD + simd(0x00, 4, offset)  # v128.load align=16 offset


def lane(i: int) -> bytes:
    return get(A) + simd(0x1F, i)  # f32x4.extract_lane


def matvec_module() -> bytes:
    mul, add = simd(0xE6), simd(0xE4)  # f32x4.mul, f32x4.add
    body = b"".join([
        get(COLS), i32(2), SHL, put(COLS),
        get(OUT), get(ROWS), i32(2), SHL, ADD, put(END),
        BLOCK, LOOP,
        get(OUT), get(END), GE_U, BR_IF, b"\x01",
        ZERO, put(A), ZERO, put(B), i32(0), put(C),
        BLOCK, LOOP,
        get(C), get(COLS), GE_U, BR_IF, b"\x01",
        get(A), load(W, 0), load(X, 0), mul, add, put(A),
        get(B), load(W, 16), load(X, 16), mul, add, put(B),
        get(C), i32(32), ADD, put(C), BR, b"\x00",
        END_, END_,
        get(A), get(B), add, put(A),
        get(OUT), get(OUT), F32_LOAD, lane(0), lane(1), F32_ADD, lane(2), lane(3), F32_ADD, F32_ADD, F32_ADD, F32_STORE,
        get(W), get(COLS), ADD, put(W),
        get(OUT), i32(4), ADD, put(OUT), BR, b"\x00",
        END_, END_, END_,
    ])
    locals_ = _vec([bytes([2, I32]), bytes([2, V128])])
    code = locals_ + body
    return b"".join([
        b"\0asm", (1).to_bytes(4, "little"),
        _section(1, _vec([bytes([0x60]) + _vec([bytes([I32])] * 5) + _vec([])])),  # type: (i32 x5) -> ()
        _section(2, _vec([_name("env") + _name("mem") + bytes([0x02, 0x00, 0x01])])),  # import memory, min 1 page
        _section(3, _vec([bytes([0])])),  # one function of type 0
        _section(7, _vec([_name("matvec") + bytes([0x00, 0])])),  # export it
        _section(10, _vec([_uleb(len(code)) + code])),
    ])
