#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ from the hex vectors of
shared CONFORMANCE.md section 9 (copied here, elided '...' tails completed by hand) plus a few
hand-made edge cases (extended lengths, extended tokens, UDP Empty/RST).

WebSocket vectors are also re-framed into TCP (RFC 8323 section 3.2) and UDP (RFC 7252
section 3) so every target starts from the same messages. decode_tcp inputs start with the
chunk-size selector byte the target reads first (0 = whole input, n = n bytes at a time).

Run from anywhere: python3 fuzz/seeds/gen_seeds.py (rewrites the three seed directories).
"""
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


# --- CONFORMANCE.md section 9, WebSocket framing -------------------------------------------
TEXT_FRAME = b"Text frame received"
WS = {
    "aiocoap_csm": "00 e1 23 10 00 00 20",
    "aiocoap_205_hello": "01 45 01 c0 ff 68 65 6c 6c 6f 0a",
    "aiocoap_pong": "00 e3",
    "aiocoap_abort_text": "00 e5 ff" + TEXT_FRAME.hex(),
    "csm_1152": "00 e1 22 04 80",
    "csm_1152_bwt": "00 e1 22 04 80 20",
    "get_wellknown_core": "01 01 01 bb 2e 77 65 6c 6c 2d 6b 6e 6f 77 6e 04 63 6f 72 65",
    "ping": "01 e2 42",
    "pong": "01 e3 42",
    "ping_custody": "01 e2 42 20",
    "get_sensors_temp": "01 01 53 b7 73 65 6e 73 6f 72 73 0b 74 65 6d 70 65 72 61 74 75 72"
    " 65 45 75 3d 43 65 6c",
    "resp_205_22_3_cel": "01 45 53 ff 32 32 2e 33 20 43 65 6c",
    "observe_register": "01 01 01 60 53 6f 62 73",
    "observe_deregister": "01 01 01 61 01 53 6f 62 73",
    "bert_get_status": "01 01 01 b6 73 74 61 74 75 73 c1 37",
    "post_no_response": "01 02 02 b1 61 d1 ea 1a",
    "csm_unknown_critical_11": "00 e1 b0",
    "abort_bad_csm_11": "00 e5 21 0b ff" + b"unknown critical option".hex(),
    "release_hold_off_60": "00 e4 41 3c",
    "get_unknown_critical_65001": "01 01 01 e0 fc dc",
    "resp_402": "01 82 01",
    # the masked client CSM frame of section 9, unmasked (key 37 fa 21 3d)
    "csm_1152_unmasked": "00 e1 22 04 80",
}

# --- hand-made edge cases (WebSocket framing) -------------------------------------------------
EXTRA_WS = {
    "empty_0_00": "00 00",
    "release_alt_address": "00 e4 2b" + b"example.org".hex() + "41 3c",
    "csm_ext_token_len_300": "00 e1 22 04 80 20 22 01 2c",
    "abort_bad_csm_option_2": "00 e5 21 02",
    "opt_delta13_len13": "01 01 01 dd 00 00" + "61" * 13,
    "opt_delta14_len14": "01 01 01 ee 00 00 00 01" + "62" * 270,
    "opt_max_number_65535": "00 45 e0 fe f2",
    "token_8": "08 45 0102030405060708 ff 78",
    # RFC 8974 extended tokens (accepted only with max_token_len above 8)
    "ext_token_9": "09 01" + "aa" * 9,
    "ext_token_20": "0d 01 07" + "bb" * 20,
    "ext_token_280": "0e 01 00 0b" + "cc" * 280 + "b1 61",
}


def ws_parts(b):
    """(tkl nibble, code, token-extension + token + body) of a WS-framed message."""
    tkl = b[0] & 0x0F
    code = b[1]
    ext = {13: 1, 14: 2}.get(tkl, 0)
    if tkl == 13:
        tlen = b[2] + 13
    elif tkl == 14:
        tlen = int.from_bytes(b[2:4], "big") + 269
    else:
        tlen = tkl
    return tkl, code, b[2 : 2 + ext + tlen], b[2 + ext + tlen :]


def tcp_len(n):
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes([n - 13])
    if n < 65805:
        return 14, (n - 269).to_bytes(2, "big")
    return 15, (n - 65805).to_bytes(4, "big")


def ws_to_tcp(b):
    tkl, code, tok, body = ws_parts(b)
    ln, lext = tcp_len(len(body))
    return bytes([(ln << 4) | tkl]) + lext + bytes([code]) + tok + body


def ws_to_udp(b, mtype=0, mid=0x1234):
    tkl, code, tok, body = ws_parts(b)
    return bytes([0x40 | (mtype << 4) | tkl, code]) + mid.to_bytes(2, "big") + tok + body


# TCP vectors stated in section 9 (checked against the re-framing below).
TCP_STATED = {
    "csm_1152": "30 e1 22 04 80",
    "csm_1152_bwt": "40 e1 22 04 80 20",
    "ping": "01 e2 42",
    "pong": "01 e3 42",
    "ping_custody": "11 e2 42 20",
    "observe_deregister": "61 01 01 61 01 53 6f 62 73",
    "post_no_response": "51 02 02 b1 61 d1 ea 1a",
    "release_hold_off_60": "20 e4 41 3c",
}
TCP_PREFIXES = {  # stated prefixes of longer messages
    "get_wellknown_core": "d1 04",
    "get_sensors_temp": "d1 0d 01 53",
    "resp_205_22_3_cel": "91 45 53 ff",
}
# Section 9's TCP length headers for L = 12/13/268/269/65804/65805 (headers only: the
# stream decoder must wait, or reject them as too large, without buffering the body).
TCP_LEN_HEADERS = ["c0", "d0 00", "d0 ff", "e0 00 00", "e0 ff ff", "f0 00 00 00 00"]

UDP_EXTRA = {
    "empty_ack": "60 00 12 34",
    "empty_con_ping": "40 00 00 01",
    "empty_rst": "70 00 ab cd",
    "con_get_wellknown_core": "41 01 00 01 01 bb 2e 77 65 6c 6c 2d 6b 6e 6f 77 6e 04 63 6f 72 65",
    "ack_205_hello": "61 45 00 01 01 c0 ff 68 65 6c 6c 6f 0a",
}


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for t in ("decode_ws", "decode_tcp", "decode_udp"):
        shutil.rmtree(os.path.join(HERE, t), ignore_errors=True)

    all_ws = {**{k: h(v) for k, v in WS.items()}, **{k: h(v) for k, v in EXTRA_WS.items()}}
    tcp_msgs = {}
    for name, b in all_ws.items():
        write("decode_ws", name, b)
        t = ws_to_tcp(b)
        tcp_msgs[name] = t
        write("decode_tcp", name, b"\x00" + t)
        write("decode_udp", name, ws_to_udp(b))

    for name, v in TCP_STATED.items():
        assert tcp_msgs[name] == h(v), (name, tcp_msgs[name].hex(), v)
    for name, v in TCP_PREFIXES.items():
        assert tcp_msgs[name].startswith(h(v)), (name, tcp_msgs[name].hex(), v)
    for i, v in enumerate(TCP_LEN_HEADERS):
        write("decode_tcp", f"len_header_{i}", b"\x00" + h(v))
        write("decode_tcp", f"len_header_{i}_plus_code", b"\x01" + h(v) + b"\x01")

    # Streams of several messages, fed whole and in small chunks.
    session = b"".join(
        tcp_msgs[n]
        for n in ("csm_1152_bwt", "ping", "get_sensors_temp", "resp_205_22_3_cel", "pong",
                  "release_hold_off_60")
    )
    for sel in (0, 1, 2, 3, 5, 7, 16):
        write("decode_tcp", f"stream_session_chunk{sel}", bytes([sel]) + session)
    write("decode_tcp", "stream_ext_tokens_chunk4", b"\x04" + tcp_msgs["csm_ext_token_len_300"]
          + tcp_msgs["ext_token_20"] + tcp_msgs["ext_token_280"])
    write("decode_tcp", "stream_trailing_partial_chunk3", b"\x03" + tcp_msgs["ping"]
          + tcp_msgs["get_wellknown_core"][:5])

    for i, (name, v) in enumerate(UDP_EXTRA.items()):
        write("decode_udp", name, h(v))
    for mtype in range(4):
        write("decode_udp", f"get_sensors_temp_type{mtype}",
              ws_to_udp(all_ws["get_sensors_temp"], mtype, 0xFFFF - mtype))


if __name__ == "__main__":
    main()
