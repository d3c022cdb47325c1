#!/usr/bin/env python3
"""A gRPC backend for the tests (Debian's python3-grpcio, generic handlers, no generated code;
messages are raw bytes). Service pilotfish.test.Echo:
  Call     unary: b"NAME:" + request; "sleep:MS" sleeps first and answers with the time the
           call had left on arrival (ms, from the grpc-timeout it was sent); "fail:CODE" ends the call with that status, no message.
  Stream   server streaming: request b"N:MS" -> N messages b"NAME:i", MS apart.
  Collect  client streaming: b"NAME:" + the count and the messages joined with ",".
  Chat     bidirectional: each message comes back as b"NAME:" + message.
and grpc.health.v1.Health/Check, answering SERVING or NOT_SERVING (set_serving), its protobuf
bytes written by hand. Importable (start_server) or run alone: prints "listening ADDR" and
serves until killed."""

import argparse
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "pilotfish.test.Echo"
HEALTH = "grpc.health.v1.Health"


class Backend:
    def __init__(self, name, workers=8):
        self.name = name.encode()
        self.serving = True
        self.health_checks = 0
        self.health_services = []
        self.sleeping = 0  # "sleep:" calls in progress
        self.fail_code = None  # set: every Call ends with this status ...
        self.fail_after_headers = False  # ... after its response headers (not trailers-only)
        self.calls = 0
        self.lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Call": grpc.unary_unary_rpc_method_handler(self.call),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            "Collect": grpc.stream_unary_rpc_method_handler(self.collect),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
        })
        health = grpc.method_handlers_generic_handler(HEALTH, {
            "Check": grpc.unary_unary_rpc_method_handler(self.check),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        self.server.add_generic_rpc_handlers((handler, health))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def call(self, request, context):
        with self.lock:
            self.calls += 1
        if self.fail_code is not None:
            if self.fail_after_headers:
                context.send_initial_metadata(())
            context.abort(_code(self.fail_code), "this server fails every call")
        if request.startswith(b"sleep:"):
            left = context.time_remaining()  # from the grpc-timeout the server was sent
            with self.lock:
                self.sleeping += 1
            time.sleep(int(request[6:]) / 1000.0)
            with self.lock:
                self.sleeping -= 1
            return self.name + b":timeout=" + (b"none" if left is None else
                                               str(int(left * 1000)).encode())
        if request.startswith(b"fail:"):
            context.abort(_code(int(request[5:])), "failed on request")
        return self.name + b":" + request

    def stream(self, request, context):
        count, delay = (int(x) for x in request.split(b":"))
        for i in range(count):
            if i:
                time.sleep(delay / 1000.0)
            yield self.name + b":" + str(i).encode()

    def collect(self, requests, context):
        got = list(requests)
        return self.name + b":" + str(len(got)).encode() + b":" + b",".join(got)

    def chat(self, requests, context):
        for m in requests:
            yield self.name + b":" + m

    def check(self, request, context):
        # HealthCheckRequest {string service = 1}; HealthCheckResponse {enum status = 1}:
        # SERVING 1, NOT_SERVING 2.
        service = b""
        if len(request) >= 2 and request[0] == 0x0A:
            service = request[2:2 + request[1]]
        with self.lock:
            self.health_checks += 1
            self.health_services.append(service.decode())
        return bytes([0x08, 1 if self.serving else 2])

    def set_serving(self, serving):
        self.serving = serving


def _code(value):
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    raise ValueError(value)


def start_server(name, workers=8):
    b = Backend(name, workers)
    b.server.start()
    return b


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="backend")
    args = parser.parse_args()
    backend = start_server(args.name)
    print(f"listening {backend.address}", flush=True)
    try:
        backend.server.wait_for_termination()
    except KeyboardInterrupt:
        sys.exit(0)
