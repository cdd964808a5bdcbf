#!/usr/bin/env python3
"""Hand-made programs for the `connection` and `udp_layer` fuzz targets (fuzz/seeds/<target>/).

Each program is spelt with the opcodes the targets read (fuzz_targets/connection_machine.rs,
fuzz_targets/udp_machine.rs): a few bytes of settings, then operations. They reach the deep
states the fuzzer then mutates: established connections with requests and responses both
ways, Release both ways, keepalive Pings with and without Pong, Custody, held requests; UDP CON
requests with empty ACK and separate response, duplicates, Reset of notifications, pings,
NSTART queues, timeouts. Regenerate with:  python3 fuzz/seeds/gen_program_seeds.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


# ---- connection -------------------------------------------------------------------------
# byte 0: bit 0 TCP, bits 1-2 our Max-Message-Size (1 MiB, 1152, 64, 300), bit 3 BWT,
# bits 4-6 keepalive (0/1 off, n: DURATIONS[n]); byte 1: CSM timeout and release timeout
# (DURATIONS = 0, 1 ms, 50 ms, 1 s, 5 s, 10 s, 30 s, 300 s).
WS, TCP = 0, 1
DEFAULT_TIMEOUTS = 5 | (4 << 3)  # CSM 10 s, release 5 s


class Conn:
    def __init__(self, framing, mms=0, bwt=True, keepalive=0, timeouts=DEFAULT_TIMEOUTS, chunk=0):
        self.tcp = framing == TCP
        self.chunk = chunk
        self.b = [framing | (mms << 1) | (8 if bwt else 0) | (keepalive << 4), timeouts]

    def peer(self, *msg):
        self.b += [2, *msg]
        if self.tcp:
            self.b.append(self.chunk)
        return self

    def csm(self, mms_mode=(0,), ext=None, bwt=1):
        return self.peer(0, *mms_mode, *((0, ext) if ext is not None else (1,)), bwt, 0)

    def ping(self, custody=0, token=b""):
        return self.peer(2, custody, len(token), *token)

    def pong(self, token=b""):
        return self.peer(3, 0, len(token), *token)

    def release_in(self, hold_off=None):
        h = [1, 0, 0, 0, hold_off] if hold_off is not None else [0]
        return self.peer(4, 0, *h, 0)

    def abort_in(self, text=b"bye"):
        return self.peer(5, len(text), 0, *text, 0)

    def request_in(self, token=b"\x42", observe=None, payload=b""):
        o = [1, observe] if observe is not None else [0]
        return self.peer(6, 0, len(token), *token, *o, len(payload), *payload)

    def response_in(self, issued_index=0, code=0, payload=b"hi", observe=None):
        # code: 0 2.05, 1 2.04, 2 4.04, 3 5.03, 4 2.31
        o = [1, 0, 0, 0, observe] if observe is not None else [0]
        return self.peer(8, 1, issued_index, code, len(payload), *payload, *o)

    def raw(self, data):
        self.b += [0, len(data), *data]
        return self

    def text(self):
        self.b.append(6)
        return self

    def transport_closed(self):
        self.b.append(7)
        return self

    def advance(self, mode, n):
        self.b += [8, mode, n >> 8, n & 0xFF]
        return self

    def send_request(self, observe=None, big=False, long_token=False, method=0):
        tok = [1, 0] if long_token else [2]
        o = {None: 2, 0: 0, 1: 1}[observe]
        pay = [240, 0, 0, 0x41] if big else [0, 0]
        self.b += [10, *tok, method, o, *pay]
        return self

    def respond(self, inbound_index=0, code=0, payload=b"", observe=None):
        o = [1, 0, 0, 0, observe] if observe is not None else [0]
        self.b += [11, 1, inbound_index, code, 0, len(payload), *payload, *o]
        return self

    def drop(self, inbound_index=0):
        self.b += [12, 1, inbound_index]
        return self

    def cancel(self, issued_index=0):
        self.b += [13, issued_index]
        return self

    def release(self):
        self.b.append(14)
        return self

    def our_ping(self, token=b"p", custody=0):
        self.b += [15, 1, len(token), *token, custody]
        return self


def connection_seeds():
    for framing, fname, chunk in [(WS, "ws", 0), (TCP, "tcp", 0), (TCP, "tcp_bytewise", 1)]:
        c = Conn(framing, chunk=chunk)
        c.csm().send_request().response_in(payload=b"hello").request_in().respond(payload=b"ok")
        write("connection", f"{fname}_request_response_both_ways", c.b)

    # The peer releases while each side has a request outstanding; answering closes.
    c = Conn(WS).csm().send_request().request_in().release_in(hold_off=60)
    c.respond().response_in()
    write("connection", "ws_peer_release_then_answers_close", c.b)
    # We release; the peer answers, then closes the transport.
    c = Conn(TCP).csm().send_request().release().response_in().transport_closed()
    write("connection", "tcp_our_release_then_transport_closed", c.b)
    # We release and the release timeout closes.
    c = Conn(WS).csm().request_in().release().advance(2, 6)
    write("connection", "ws_release_timeout", c.b)
    # Keepalive 1 s: a Ping after 1 s of silence, then Abort "No Pong" after another.
    c = Conn(WS, keepalive=3).csm().advance(2, 1).advance(2, 1)
    write("connection", "ws_keepalive_no_pong", c.b)
    # Keepalive answered: the Pong keeps it open, the next Ping comes.
    c = Conn(TCP, keepalive=3).csm().advance(3, 0).pong().advance(3, 0).pong().advance(1, 50)
    write("connection", "tcp_keepalive_pong", c.b)
    # Keepalive 50 ms, time moved exactly to each deadline: Ping, then NoPong.
    c = Conn(WS, keepalive=2).csm().advance(3, 0).advance(3, 0)
    write("connection", "ws_keepalive_50ms_to_the_deadline", c.b)
    # No CSM in time.
    write("connection", "ws_csm_timeout", Conn(WS, timeouts=3 | (4 << 3)).advance(3, 0).b)
    # A request before the CSM; text frame; garbage.
    write("connection", "ws_missing_csm", Conn(WS).request_in().b)
    write("connection", "ws_text_frame", Conn(WS).csm().text().b)
    write("connection", "tcp_garbage", Conn(TCP).csm().raw(b"\xff\xff\xff\x00\x01").b)
    # Peer Abort.
    write("connection", "tcp_peer_abort", Conn(TCP).csm().send_request().abort_in().b)
    # Observation: notifications keep it open, cancel ends it.
    c = Conn(WS).csm().send_request(observe=0).response_in(observe=5).response_in(observe=6)
    c.cancel().response_in(observe=7)
    write("connection", "ws_observe_notifications_then_cancel", c.b)
    # Custody: the Pong waits for our answer.
    c = Conn(TCP).csm().request_in().ping(custody=1, token=b"c").respond()
    write("connection", "tcp_custody_ping", c.b)
    # A request too large for the base size is held until the CSM (1 MiB) lets it go.
    c = Conn(WS).send_request(big=True).csm(mms_mode=(3, 0)).response_in()
    write("connection", "ws_held_request_until_csm", c.b)
    # A peer with a tiny Max-Message-Size and extended tokens: our request is refused, our
    # long token allowed; then a text frame aborts with a shortened diagnostic.
    c = Conn(WS).csm(mms_mode=(1, 7), ext=3).send_request().send_request(long_token=True)
    c.text()
    write("connection", "ws_tiny_peer_then_abort", c.b)
    # Our Ping and its Pong; a peer Ping answered.
    c = Conn(WS).csm().our_ping(b"q").pong(b"q").ping(token=b"z")
    write("connection", "ws_pings_both_ways", c.b)
    # Drop a response (No-Response) while the peer releases.
    c = Conn(WS).csm().request_in().release_in().drop()
    write("connection", "ws_drop_response_completes_release", c.b)


# ---- udp_layer --------------------------------------------------------------------------
# bytes 0-3: settings (0 = RFC 7252 defaults, dedup 8192, tokens of 4 bytes); 4-11: seed.
class Udp:
    def __init__(self, b0=0, b1=0, b2=0, seed=1):
        self.b = [b0, b1, b2, 0, *seed.to_bytes(8, "big")]

    def op(self, peer, code, *args):
        self.b += [peer, code, *args]
        return self

    def request_in(self, peer, mtype=0, mid=0x0700, token=b"\xaa", observe=None, payload=b""):
        o = [1, observe] if observe is not None else [0]
        return self.op(peer, 1, mtype, 2, mid >> 8, mid & 0xFF, 1, 0, len(token), *token, *o,
                       0, len(payload), *payload)

    def response_in(self, peer, mtype=0, mid=0x0800, code=0, payload=b"", observe=None):
        o = [1, 0, 0, 0, observe] if observe is not None else [0]
        # token mode 1: one of our tokens to this peer (the first)
        return self.op(peer, 1, mtype, 2, mid >> 8, mid & 0xFF, 4, 1, 0, code, len(payload),
                       *payload, *o)

    def answer(self, peer, ours_index, kind, payload=b"", mid=0x1234, observe=None):
        # kind: 0 empty ACK, 1 piggybacked ACK, 2 RST, 3 separate CON, 4 separate NON
        o = [1, 0, 0, 0, observe] if observe is not None else [0]
        m = [mid >> 8, mid & 0xFF] if kind >= 3 else []
        return self.op(peer, 4, ours_index, 0, len(payload), *payload, *o, kind, *m)

    def replay(self, peer, theirs_index):
        return self.op(peer, 6, theirs_index, 1)

    def advance(self, mode, n):
        return self.op(0, 7, mode, n >> 8, n & 0xFF)

    def send_request(self, peer, con=True, observe=False, method=0):
        return self.op(peer, 9, 1 if con else 0, method, 0 if observe else 1, 0, 0, 1)

    def respond(self, index=0, payload=b"", observe=None):
        o = [1, 0, 0, 0, observe] if observe is not None else [0]
        return self.op(0, 11, index, 0, 0, len(payload), *payload, *o)

    def notify(self, index=0, seq=2, con=False):
        return self.op(0, 12, index, 0, 0, 0, 0, seq, 1 if con else 0)

    def drop(self, index=0):
        return self.op(0, 13, index)

    def cancel(self, index=0):
        return self.op(0, 14, index)

    def ping(self, peer):
        return self.op(peer, 15, 1)


def udp_seeds():
    # CON request, empty ACK, separate CON response (which we ACK).
    u = Udp().send_request(1).answer(1, 0, 0).answer(1, 0, 3, b"ok").advance(1, 10)
    write("udp_layer", "con_request_empty_ack_separate_response", u.b)
    # CON request answered piggybacked.
    write("udp_layer", "con_request_piggybacked", Udp().send_request(2).answer(2, 0, 1, b"hi").b)
    # A peer's CON request, its duplicate (acknowledged, not delivered again), our response,
    # the duplicate again (the response is replayed), then time passes.
    u = Udp().request_in(2).replay(2, 0).respond(0, b"r").replay(2, 0).advance(2, 300)
    write("udp_layer", "duplicate_con_request", u.b)
    # Same with a NON request.
    u = Udp().request_in(1, mtype=1).replay(1, 0).respond(0, b"n").advance(3, 0)
    write("udp_layer", "duplicate_non_request", u.b)
    # An observation: CON GET Observe 0, piggybacked response, a NON notification the client
    # resets, then a CON notification it resets.
    u = Udp().request_in(3, observe=0, token=b"\xbb").respond(0, observe=1).notify(0, 2)
    u.answer(3, 1, 2).notify(0, 3, con=True).answer(3, 2, 2)
    write("udp_layer", "rst_of_notifications", u.b)
    # Our observation: notifications keep it, cancel ends it; a later one is reset.
    u = Udp().send_request(0, observe=True).answer(0, 0, 1, observe=2)
    u.response_in(0, mtype=1, mid=0x0801, observe=3).cancel(0)
    u.response_in(0, mtype=0, mid=0x0802, observe=4)
    write("udp_layer", "observe_notifications_then_cancel", u.b)
    # CON request never answered: retransmitted MAX_RETRANSMIT times, then a timeout.
    u = Udp().send_request(1)
    for _ in range(6):
        u.advance(3, 0)
    write("udp_layer", "con_request_retransmits_then_times_out", u.b)
    # NON request answered by a NON response; another one reset.
    u = Udp().send_request(2, con=False).response_in(2, mtype=1)
    u.send_request(2, con=False).answer(2, 1, 2)
    write("udp_layer", "non_requests", u.b)
    # Ping and pong (RST), and a ping that times out.
    u = Udp().ping(0).answer(0, 0, 2).ping(1)
    for _ in range(6):
        u.advance(3, 0)
    write("udp_layer", "pings", u.b)
    # NSTART 1: the second CON request waits for the first's ACK.
    u = Udp().send_request(1).send_request(1).answer(1, 0, 1).answer(1, 1, 1)
    write("udp_layer", "nstart_queue", u.b)
    # Unmatched response (reset), empty CON ping from the peer (reset).
    u = Udp().response_in(3, mtype=0).op(3, 1, 0, 2, 0, 5, 0)
    write("udp_layer", "unmatched_response_and_peer_ping", u.b)
    # No-Response: a CON request dropped gets its empty ACK.
    write("udp_layer", "drop_response_acks", Udp().request_in(0).drop(0).b)
    # Tiny limits: a request over max_receive_size 64 gets 4.13.
    u = Udp(b1=1 << 6).request_in(1, payload=b"x" * 20)
    u.b[-21] = 200  # payload mode "large": u16 length + fill byte
    u.b[-20:] = [0, 100, 0x41]
    write("udp_layer", "too_large_request", u.b)
    # Small dedup table (1 entry), zero ACK timeout, MAX_RETRANSMIT 0.
    u = Udp(b0=3 | (1 << 4), b2=1 << 2).request_in(1, mid=1).request_in(1, mid=2).replay(1, 0)
    u.send_request(2).advance(3, 0)
    write("udp_layer", "tiny_dedup_zero_timeouts", u.b)


if __name__ == "__main__":
    connection_seeds()
    udp_seeds()
