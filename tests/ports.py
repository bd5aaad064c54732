"""A free TCP port on 127.0.0.1, picked at run time (as launch/local.sh does), so two test
runs on one machine never share a coordinator or emulator port."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
