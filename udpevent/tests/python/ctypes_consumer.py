"""Drives libudpEvent through Python ctypes, a second real FFI: the legacy API
as a P/Invoke-style wrapper would, then the v2 API. Usage: ctypes_consumer.py LIB.so"""
import ctypes
import os
import socket
import sys
import time


class UdpEvent(ctypes.Structure):
    """struct udp_event_t, packed, as the original library defines it."""
    _pack_ = 1
    _fields_ = [
        ("family", ctypes.c_uint16), ("pid", ctypes.c_uint32), ("UserId", ctypes.c_uint32),
        ("EventTime", ctypes.c_uint64), ("SPT", ctypes.c_uint16), ("DPT", ctypes.c_uint16),
        ("task", ctypes.c_char * 16), ("rx_b", ctypes.c_uint64), ("tx_b", ctypes.c_uint64),
        ("rxPkts", ctypes.c_uint32), ("txPkts", ctypes.c_uint32),
        ("SADDR", ctypes.c_char * 64), ("DADDR", ctypes.c_char * 64),
    ]


class Config(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_uint32), ("port", ctypes.c_uint16), ("family", ctypes.c_uint8),
        ("event_mask", ctypes.c_uint32), ("comm", ctypes.c_char_p),
        ("addr", ctypes.c_char_p), ("backend", ctypes.c_char_p),
    ]


class Event(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64), ("sock", ctypes.c_uint64), ("cgroup", ctypes.c_uint64),
        ("rx_bytes", ctypes.c_uint64), ("tx_bytes", ctypes.c_uint64),
        ("rx_packets", ctypes.c_uint64), ("tx_packets", ctypes.c_uint64),
        ("pid", ctypes.c_uint32), ("tid", ctypes.c_uint32), ("uid", ctypes.c_uint32),
        ("kind", ctypes.c_uint32), ("ret", ctypes.c_int32), ("family", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8), ("lport", ctypes.c_uint16), ("rport", ctypes.c_uint16),
        ("_pad2", ctypes.c_uint16), ("laddr", ctypes.c_uint8 * 16),
        ("raddr", ctypes.c_uint8 * 16), ("comm", ctypes.c_char * 16),
    ]


class Stats(ctypes.Structure):
    _fields_ = [("events", ctypes.c_uint64 * 4), ("lost", ctypes.c_uint64),
                ("recv_eagain", ctypes.c_uint64), ("recv_peek", ctypes.c_uint64)]


def legacy(lib):
    assert ctypes.sizeof(UdpEvent) == 190
    lib.DequeuePerfEvent.restype = UdpEvent
    lib.AddProbe()
    deadline = time.time() + 10
    while lib.getStatus() != 1:
        assert time.time() < deadline, "getStatus never became 1"
        time.sleep(0.01)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    t0 = time.time_ns()
    tx.sendto(b"python!", rx.getsockname())
    rx.recvfrom(64)
    sport, rport = tx.getsockname()[1], rx.getsockname()[1]
    mine = []
    while len(mine) < 2:
        ev = lib.DequeuePerfEvent()
        if ev.pid == os.getpid() and ev.SPT in (sport, rport):
            mine.append(ev)
    send, recv = mine
    assert (send.SPT, send.DPT, send.tx_b, send.txPkts) == (sport, rport, 7, 1), "send"
    assert (recv.SPT, recv.DPT, recv.rx_b, recv.rxPkts) == (rport, sport, 7, 1), "recv"
    for ev in mine:
        assert ev.family == socket.AF_INET and ev.UserId == os.getuid()
        assert ev.SADDR == b"127.0.0.1" and ev.DADDR == b"127.0.0.1"
        assert t0 <= ev.EventTime <= time.time_ns()
        assert ev.task == b"python3", ev.task
    lib.cleanup()
    assert lib.getStatus() == 0
    assert bytes(lib.DequeuePerfEvent()) == bytes(190), "zeroed after cleanup"


def v2(lib):
    lib.udptrace_open.restype = ctypes.c_void_p
    lib.udptrace_open.argtypes = [ctypes.POINTER(Config)]
    lib.udptrace_next.argtypes = [ctypes.c_void_p, ctypes.POINTER(Event), ctypes.c_int]
    lib.udptrace_get_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(Stats)]
    lib.udptrace_close.argtypes = [ctypes.c_void_p]
    lib.udptrace_last_error.restype = ctypes.c_char_p

    bad = Config(addr=b"300.1.1.1")
    assert not lib.udptrace_open(ctypes.byref(bad))
    assert b"300.1.1.1" in lib.udptrace_last_error()

    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind(("::1", 0))
    rport = rx.getsockname()[1]
    cfg = Config(port=rport, family=6, event_mask=1 << 2)  # receives only
    h = lib.udptrace_open(ctypes.byref(cfg))
    assert h, lib.udptrace_last_error()
    ev = Event()
    assert lib.udptrace_next(h, ctypes.byref(ev), 100) == 1, "timeout first"
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx.sendto(b"v2 from python", ("::1", rport))
    rx.recvfrom(64)
    assert lib.udptrace_next(h, ctypes.byref(ev), 2000) == 0
    assert (ev.kind, ev.ret, ev.family, ev.lport) == (2, 14, 6, rport)
    assert ev.rport == tx.getsockname()[1]
    assert bytes(ev.laddr) == socket.inet_pton(socket.AF_INET6, "::1")
    assert ev.pid == os.getpid() and ev.comm == b"python3"
    st = Stats()
    assert lib.udptrace_get_stats(h, ctypes.byref(st)) == 0
    assert st.events[1] == 1 and st.events[0] == 0 and st.lost == 0
    lib.udptrace_close(h)


if __name__ == "__main__":
    library = ctypes.CDLL(sys.argv[1])
    legacy(library)
    v2(library)
    print("PASS")
